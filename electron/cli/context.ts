import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { mkdirSync } from 'node:fs'
import type { Command } from 'commander'
import { EngineError } from '../engine/errors.js'

/** Global options every command sees (`--home`, `--vault`, `--json`). */
export interface CliContext {
  /** Data folder: --home, else TRESOR_HOME, else ~/.tresor. Created on first use. */
  home(): string
  /** --vault override of the current vault, if given. */
  vaultOverride(): string | undefined
  json(): boolean
  /** Prints a result: JSON when --json, else the human text (or nothing). */
  print(value: unknown, human?: string | (() => string)): void
  /** Progress for humans on stderr (silent with --json or when stderr is not a TTY unless forced). */
  progress(line: string): void
  /** A notice on stderr, `tresor: <line>`, shown with --json too (stdout stays machine-readable). */
  warn(line: string): void
}

export function createContext(program: Command): CliContext {
  const opts = () => program.opts<{ home?: string; vault?: string; json?: boolean }>()
  return {
    home() {
      const dir = resolve(opts().home ?? process.env.TRESOR_HOME ?? join(homedir(), '.tresor'))
      mkdirSync(dir, { recursive: true })
      return dir
    },
    vaultOverride() {
      const v = opts().vault
      return v === undefined ? undefined : resolve(v)
    },
    json() {
      return opts().json === true
    },
    print(value, human) {
      if (opts().json === true) {
        process.stdout.write(JSON.stringify(value, null, 2) + '\n')
        return
      }
      const text = typeof human === 'function' ? human() : human
      if (text !== undefined) process.stdout.write(text.endsWith('\n') ? text : text + '\n')
      else process.stdout.write(JSON.stringify(value, null, 2) + '\n')
    },
    progress(line) {
      if (opts().json === true || !process.stderr.isTTY) return
      process.stderr.write(`\r\x1b[2K${line}`)
    },
    warn(line) {
      process.stderr.write(`tresor: ${line}\n`)
    },
  }
}

/** Thrown for a usage problem the parser cannot see (exit code 2). */
export class UsageError extends Error {}

export function usage(message: string): never {
  throw new UsageError(message)
}

export function assertEngine(condition: unknown, code: ConstructorParameters<typeof EngineError>[0], message: string): asserts condition {
  if (!condition) throw new EngineError(code, message)
}
