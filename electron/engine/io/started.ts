/**
 * Work started now and settled later: each promise is observed the moment it is added (so its
 * failure is never an unhandled rejection while the caller awaits something else), the first
 * failure is remembered (so a loop can stop starting more), and `settle` waits for every one
 * before it throws that failure (so none is left writing into the caller's memory).
 */
export class Started {
  private readonly pending: Promise<unknown>[] = []
  private first: { error: unknown } | undefined

  add(work: Promise<unknown>): void {
    work.catch((error: unknown) => {
      this.first ??= { error }
    })
    this.pending.push(work)
  }

  /** Whether any work added so far has failed. */
  get failed(): boolean {
    return this.first !== undefined
  }

  /** Waits for all the work added; never throws (a caller already failing for its own reason). */
  async drain(): Promise<void> {
    await Promise.allSettled(this.pending)
  }

  /** Waits for all the work added; then throws the first failure, if any. */
  async settle(): Promise<void> {
    await this.drain()
    if (this.first) throw this.first.error
  }
}
