/**
 * A small least-recently-used cache of asynchronously loaded values, bounded by entry count.
 * Concurrent requests for the same key share one load; a failed load is forgotten so the next
 * request retries (and sees the error again).
 */
export class AsyncLru<K, V> {
  private readonly entries = new Map<K, Promise<V>>()

  constructor(private readonly maxEntries: number) {}

  get(key: K, load: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key)
    if (hit) {
      this.entries.delete(key)
      this.entries.set(key, hit)
      return hit
    }
    const pending = load()
    this.entries.set(key, pending)
    pending.catch(() => {
      if (this.entries.get(key) === pending) this.entries.delete(key)
    })
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next()
      if (oldest.done) break
      this.entries.delete(oldest.value)
    }
    return pending
  }

  clear(): void {
    this.entries.clear()
  }
}
