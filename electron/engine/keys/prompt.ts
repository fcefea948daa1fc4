import { EngineError } from '../errors.js'

/** Asks for a secret; resolves with what was typed (never echoed). */
export type SecretPrompt = (question: string) => Promise<string>

/** True when a human can be asked: stdin and stderr are terminals. */
export function canPrompt(input: NodeJS.ReadStream = process.stdin, output: NodeJS.WriteStream = process.stderr): boolean {
  return input.isTTY === true && output.isTTY === true && typeof input.setRawMode === 'function'
}

/**
 * Reads one line from a terminal in raw mode without echoing it. The question goes to stderr (stdout
 * stays clean for --json). Backspace edits, Enter ends, Ctrl-C / Ctrl-D on an empty line cancel
 * (CANCELLED). The terminal mode is restored in every case.
 */
export function promptSecret(question: string, input: NodeJS.ReadStream = process.stdin, output: NodeJS.WriteStream = process.stderr): Promise<string> {
  if (!canPrompt(input, output)) {
    return Promise.reject(new EngineError('PASSPHRASE_REQUIRED', 'A passphrase is needed but there is no terminal to ask it on. Set TRESOR_PASSPHRASE.'))
  }
  return new Promise((resolve, reject) => {
    const wasRaw = input.isRaw
    let typed = ''
    const finish = (err: Error | undefined) => {
      input.off('data', onData)
      input.setRawMode(wasRaw)
      input.pause()
      output.write('\n')
      if (err) reject(err)
      else resolve(typed)
    }
    const onData = (chunk: Buffer | string) => {
      const text = typeof chunk === 'string' ? chunk : chunk.toString('utf8')
      let offset = 0
      for (const ch of text) {
        offset += ch.length
        if (ch === '\r' || ch === '\n') {
          // What was typed ahead belongs to the next question.
          let rest = text.slice(offset)
          if (ch === '\r' && rest.startsWith('\n')) rest = rest.slice(1)
          if (rest.length > 0) input.unshift(Buffer.from(rest, 'utf8'))
          return finish(undefined)
        }
        if (ch === '\u0003' || (ch === '\u0004' && typed.length === 0)) {
          return finish(new EngineError('CANCELLED', 'Cancelled.'))
        }
        if (ch === '\u007f' || ch === '\b') {
          typed = Array.from(typed).slice(0, -1).join('')
          continue
        }
        if (ch === '\u0015') {
          typed = '' // Ctrl-U clears the line
          continue
        }
        if (ch < ' ' && ch !== '\t') continue
        typed += ch
      }
    }
    // Echo goes off before the question shows: an answer typed (or pasted, or sent by a password
    // manager) the moment the prompt appears must not reach the screen.
    input.setRawMode(true)
    output.write(question)
    input.resume()
    input.on('data', onData)
  })
}
