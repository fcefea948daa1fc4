/**
 * The message protocol between a job host (supervisor) and a job process.
 *
 * Terms
 * - job host: the process that owns the catalog row of a job and launches it (Electron main, the web
 *   host, or the CLI itself). It sends `ToJob` messages.
 * - job process: where the pipeline runs (a utility process, a child process, or the host itself for
 *   the CLI). It sends `FromJob` messages. One job per process; it exits once the job has ended.
 * - job spec: what to run: a pipeline kind and its plain-data input.
 *
 * Both unions are discriminated on `kind` and validated with zod on receipt (`parseToJob`,
 * `parseFromJob`): a message that does not parse is a bug on the other side, never data.
 * Every message is structured-clone and JSON safe (no Buffers, no bigint, no undefined members
 * that matter).
 */
import { z } from 'zod'
import { ERROR_CODES, type WireError } from '../../shared/errors.js'
import { WRITER_FORMATS } from '../formats/types.js'

export const JOB_KINDS = ['backup', 'restore', 'verify', 'prune'] as const
export type JobKind = (typeof JOB_KINDS)[number]

/** Every image format a restore can write (the writer formats of engine/formats). */
/** Every writer format can be a restore target. */
export const RESTORE_FORMATS = WRITER_FORMATS

const MAX_PATH = 4096
const pathSchema = z
  .string()
  .min(1)
  .max(MAX_PATH)
  .refine((s) => !s.includes('\0'), 'a path must not contain NUL')

export const wireErrorSchema = z.object({
  code: z.enum(ERROR_CODES),
  message: z.string().max(8192),
})

/**
 * What a restore job does. `mode`:
 * - `file`: one disk written as a new image at `targetPath` (a file path).
 * - `folder`: every selected disk written into the folder `targetPath`, one file per disk.
 * - `replace`: the selected disks written over their original files (`PointDisk.sourcePath`), the
 *   old file kept until the new one has verified.
 * `disks` selects disks by name or index (as a string or number); empty means every disk.
 */
export const restoreJobInputSchema = z.object({
  pointId: z.string().min(1).max(256),
  mode: z.enum(['file', 'folder', 'replace']),
  targetPath: pathSchema.optional(),
  disks: z.array(z.union([z.string().min(1).max(1024), z.number().int().min(0)])).max(4096).default([]),
  format: z.enum(RESTORE_FORMATS).optional(),
  /** The user explicitly chose to overwrite an existing target file. */
  overwrite: z.boolean().default(false),
  /** Read written images back and check them before naming them (always done for `replace`). */
  verify: z.boolean().optional(),
  /** Vault folder overriding the current vault (CLI `--vault`). */
  vaultPath: pathSchema.optional(),
})
export type RestoreJobInput = z.input<typeof restoreJobInputSchema>

export const jobSpecSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('backup'), input: z.object({ machineId: z.string().min(1).max(256) }).loose() }),
  z.object({ kind: z.literal('restore'), input: restoreJobInputSchema }),
  z.object({ kind: z.literal('verify'), input: z.object({ readData: z.boolean().default(false) }).loose() }),
  z.object({ kind: z.literal('prune'), input: z.object({ maxUnused: z.number().min(0).max(1).optional() }).loose() }),
])
export type JobSpec = z.input<typeof jobSpecSchema>

/**
 * Progress of a job. `bytesDone`/`bytesTotal` drive the bar; `phase` names the step ('reading',
 * 'writing', 'verifying'...); further numeric or string members (per pipeline: bytesNew,
 * throughput...) pass through untouched.
 */
export const jobProgressSchema = z
  .object({
    bytesDone: z.number().finite().min(0),
    bytesTotal: z.number().finite().min(0),
    phase: z.string().max(64).optional(),
  })
  .catchall(z.unknown())
export type JobProgressReport = z.infer<typeof jobProgressSchema>

const jobIdSchema = z.string().min(1).max(128)

export const toJobSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('start'),
    jobId: jobIdSchema,
    /** Data folder (TRESOR_HOME) of the host: the job opens the catalog and vault from it. */
    home: pathSchema,
    spec: jobSpecSchema,
  }),
  z.object({ kind: z.literal('cancel'), jobId: jobIdSchema }),
])
export type ToJob = z.input<typeof toJobSchema>

export const fromJobSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('progress'), jobId: jobIdSchema, progress: jobProgressSchema }),
  z.object({ kind: z.literal('log'), jobId: jobIdSchema, line: z.string().max(16_384) }),
  z.object({ kind: z.literal('finished'), jobId: jobIdSchema, result: z.unknown() }),
  z.object({ kind: z.literal('failed'), jobId: jobIdSchema, error: wireErrorSchema }),
])
export type FromJob = z.infer<typeof fromJobSchema>

export type ParseResult<T> = { ok: true; message: T } | { ok: false; error: WireError }

function parseWith<T>(schema: z.ZodType<T>, raw: unknown, what: string): ParseResult<T> {
  const r = schema.safeParse(raw)
  if (r.success) return { ok: true, message: r.data }
  const issue = r.error.issues[0]
  const where = issue?.path.length ? ` at ${issue.path.join('.')}` : ''
  return { ok: false, error: { code: 'INVALID_INPUT', message: `Malformed ${what} message${where}: ${issue?.message ?? 'invalid'}.` } }
}

/** Validates a message received by a job process. */
export function parseToJob(raw: unknown): ParseResult<z.infer<typeof toJobSchema>> {
  return parseWith(toJobSchema, raw, 'job control')
}

/** Validates a message received by a job host. */
export function parseFromJob(raw: unknown): ParseResult<FromJob> {
  return parseWith(fromJobSchema, raw, 'job report')
}

/** Keeps a log line within the protocol's bound (long script output is cut, not rejected). */
export function clampLogLine(line: string): string {
  return line.length <= 16_384 ? line : line.slice(0, 16_370) + ' …[truncated]'
}
