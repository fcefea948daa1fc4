/**
 * The IPC contract: every method and event the renderer can use, declared once, with a zod schema
 * for each input, output and event payload. Main (through `ipcMain.handle`) and the web host (over
 * a WebSocket) implement it; preload forwards it as `window.tresor`; the renderer calls it through
 * `renderer/src/api`. Both hosts check every input with `parseInput` before anything else.
 *
 * Each method takes ONE plain-data object (fields can be added without reordering) and resolves to
 * plain data. Failures cross the boundary as values (`WireResult`), never as thrown errors.
 * Secrets never travel from main to the renderer: only booleans such as `hasPassphrase`.
 */
import { z } from 'zod'
import type { WireError, WireResult } from './errors.js'
import {
  AppInfo,
  JobDetail,
  JobOutcome,
  JobProgress,
  JobState,
  JobSummary,
  MachineSummary,
  PointSummary,
  PolicySpec,
  PolicySummary,
  RestoreQueueItem,
  RestoreSpec,
  Settings,
  VaultStatus,
} from './models.js'
import { AbsolutePath, ExternalUrl, Id, Name, text } from './schemas.js'

/** Passphrases: any characters but NUL, at most 1024 (NFC-normalised by the keys module). */
const Passphrase = text(1024).min(1)
const Empty = z.strictObject({})
const Done = z.null()

function method<I extends z.ZodType, O extends z.ZodType>(input: I, output: O) {
  return { input, output }
}

/** Every method: its input and output schema. The single source of truth. */
export const API = {
  // app and settings
  getAppInfo: method(Empty, AppInfo),
  getSettings: method(Empty, Settings),
  updateSettings: method(Settings.partial().strict(), Settings),
  // vault and keys
  getVaultStatus: method(Empty, VaultStatus),
  initVault: method(z.strictObject({ path: AbsolutePath, passphrase: Passphrase, storeInKeychain: z.boolean() }), VaultStatus),
  openVault: method(z.strictObject({ path: AbsolutePath, passphrase: Passphrase.nullable(), storeInKeychain: z.boolean() }), VaultStatus),
  unlockVault: method(z.strictObject({ passphrase: Passphrase, storeInKeychain: z.boolean() }), VaultStatus),
  lockVault: method(Empty, VaultStatus),
  // machines
  listMachines: method(Empty, z.array(MachineSummary)),
  addMachine: method(
    z.strictObject({ name: Name, diskPaths: z.array(AbsolutePath).min(1).max(64), policyId: Id.nullable() }),
    z.strictObject({ machineId: z.string() }),
  ),
  importMachine: method(z.strictObject({ kind: z.enum(['libvirt', 'vbox']), path: AbsolutePath }), z.strictObject({ machineId: z.string() })),
  removeMachine: method(z.strictObject({ machineId: Id }), Done),
  setMachinePolicy: method(z.strictObject({ machineId: Id, policyId: Id.nullable() }), Done),
  setDiskExcluded: method(z.strictObject({ machineId: Id, diskId: Id, isExcluded: z.boolean() }), Done),
  // policies
  listPolicies: method(Empty, z.array(PolicySummary)),
  savePolicy: method(z.strictObject({ id: Id.nullable(), name: Name, spec: PolicySpec }), PolicySummary),
  deletePolicy: method(z.strictObject({ policyId: Id }), Done),
  // jobs
  startBackup: method(z.strictObject({ machineId: Id }), z.strictObject({ jobId: z.string() })),
  /** Checks the current vault (readData: decrypt and re-hash every chunk) as a job. */
  startVerify: method(z.strictObject({ readData: z.boolean() }), z.strictObject({ jobId: z.string() })),
  /** Applies every machine's retention and frees the space of unreferenced data, as a job. */
  startPrune: method(Empty, z.strictObject({ jobId: z.string() })),
  cancelJob: method(z.strictObject({ jobId: Id }), Done),
  listJobs: method(
    z.strictObject({ limit: z.number().int().min(1).max(1000).optional(), states: z.array(JobState).max(5).optional() }),
    z.array(JobSummary),
  ),
  getJob: method(z.strictObject({ jobId: Id }), JobDetail),
  // recovery points
  listPoints: method(z.strictObject({ machineId: Id.nullable().optional() }), z.array(PointSummary)),
  // restore queue
  listRestoreQueue: method(Empty, z.array(RestoreQueueItem)),
  enqueueRestore: method(RestoreSpec, z.strictObject({ itemId: z.string() })),
  reorderRestoreQueue: method(z.strictObject({ itemIds: z.array(Id).max(10_000) }), z.array(RestoreQueueItem)),
  cancelRestore: method(z.strictObject({ itemId: Id }), Done),
  // host features (Electron; the web host answers UNSUPPORTED)
  chooseFiles: method(
    z.strictObject({ purpose: z.enum(['disks', 'import', 'vaultFolder', 'restoreTarget']) }),
    z.strictObject({ paths: z.array(z.string()) }),
  ),
  openExternal: method(z.strictObject({ url: ExternalUrl }), z.strictObject({ opened: z.boolean() })),
} as const

export type ApiMethod = keyof typeof API
/** What the caller passes (before defaults). */
export type ApiInput<M extends ApiMethod> = z.input<(typeof API)[M]['input']>
/** What the implementation receives (validated). */
export type ApiParsedInput<M extends ApiMethod> = z.output<(typeof API)[M]['input']>
export type ApiOutput<M extends ApiMethod> = z.output<(typeof API)[M]['output']>

/** The implementation side (main, web host): inputs are already validated. */
export type AppApi = { [M in ApiMethod]: (input: ApiParsedInput<M>) => Promise<ApiOutput<M>> }

/** The caller side (renderer): methods whose input has no required field may be called without one. */
export type AppClient = {
  // `{} extends X` asks "has X no required key?" (the empty object type is the point here).
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type
  [M in ApiMethod]: {} extends ApiInput<M> ? (input?: ApiInput<M>) => Promise<ApiOutput<M>> : (input: ApiInput<M>) => Promise<ApiOutput<M>>
}

/** Method names, as a value (preload and the web host iterate over it). */
export const API_METHODS = Object.fromEntries(Object.keys(API).map((k) => [k, 1])) as { readonly [M in ApiMethod]: 1 }
export const API_METHOD_NAMES = Object.keys(API) as ApiMethod[]

export function isApiMethod(name: unknown): name is ApiMethod {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(API, name)
}

/** Every event main / the web host pushes to the renderer, and its payload schema. */
export const EVENTS = {
  jobProgress: JobProgress,
  jobFinished: JobOutcome,
  /** A job was queued, started or changed state (reload the list). */
  jobsChanged: z.strictObject({ jobId: z.string() }),
  restoreQueueChanged: z.strictObject({ items: z.array(RestoreQueueItem) }),
  vaultStatusChanged: VaultStatus,
  machinesChanged: z.strictObject({}),
  policiesChanged: z.strictObject({}),
  settingsChanged: Settings,
} as const

export type AppEventName = keyof typeof EVENTS
export type AppEvents = { [E in AppEventName]: z.output<(typeof EVENTS)[E]> }
export const EVENT_NAMES = Object.keys(EVENTS) as AppEventName[]

export function isAppEventName(name: unknown): name is AppEventName {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(EVENTS, name)
}

/** Emits one event to every connected renderer. */
export type EmitEvent = <E extends AppEventName>(event: E, payload: AppEvents[E]) => void

/** Electron IPC channel of a method (`ipcRenderer.invoke`). */
export function methodChannel(method: ApiMethod): string {
  return `tresor:api:${method}`
}
/** Electron IPC channel on which main sends every event as `{ event, payload }`. */
export const EVENT_CHANNEL = 'tresor:event'

/**
 * Validates an untrusted input for `method`. `undefined` counts as `{}` (methods without fields).
 * Returns the parsed value or an INVALID_INPUT error naming the offending fields (never echoing
 * the values, which may be huge or secret).
 */
export function parseInput<M extends ApiMethod>(method: M, input: unknown): { ok: true; value: ApiParsedInput<M> } | { ok: false; error: WireError } {
  const schema = API[method].input as z.ZodType
  const result = schema.safeParse(input === undefined ? {} : input)
  if (result.success) return { ok: true, value: result.data as ApiParsedInput<M> }
  const fields = result.error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(input)'}: ${i.message}`)
    .join('; ')
  return { ok: false, error: { code: 'INVALID_INPUT', message: `Invalid input for ${method}: ${fields.slice(0, 500)}` } }
}

/** Calls `impl[method]` with an unvalidated input: validation first, failures as values. */
export async function dispatch(
  impl: AppApi,
  method: unknown,
  input: unknown,
  toWireError: (err: unknown) => WireError,
): Promise<WireResult<unknown>> {
  if (!isApiMethod(method)) return { ok: false, error: { code: 'INVALID_INPUT', message: 'Unknown method.' } }
  const parsed = parseInput(method, input)
  if (!parsed.ok) return parsed
  try {
    const fn = impl[method] as (i: unknown) => Promise<unknown>
    const value = await fn.call(impl, parsed.value)
    return { ok: true, value: value === undefined ? null : value }
  } catch (err) {
    return { ok: false, error: toWireError(err) }
  }
}

// ---------------------------------------------------------------------------------------------
// The web host's WebSocket frames (the same contract over a socket).

/** Largest frame the web host accepts (bytes). */
export const WS_MAX_FRAME_BYTES = 1 << 20

export const WsCallFrame = z.strictObject({
  t: z.literal('call'),
  id: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  method: z.string().max(64),
  input: z.unknown().optional(),
})
export type WsCallFrame = z.infer<typeof WsCallFrame>

export type WsServerFrame =
  | { t: 'hello'; host: 'web'; version: string }
  | { t: 'result'; id: number; result: WireResult<unknown> }
  | { t: 'event'; event: AppEventName; payload: unknown }
  /** A frame that could not be answered by id (not JSON, no id): the error is reported this way. */
  | { t: 'error'; error: WireError }

// ---------------------------------------------------------------------------------------------
// What preload exposes as `window.tresor` (Electron). Results arrive as WireResult values; the
// renderer's API client unwraps them. Nothing else is exposed.

export type TresorBridgeCall = { [M in ApiMethod]: (input?: ApiInput<M>) => Promise<WireResult<ApiOutput<M>>> }

export interface TresorBridge {
  readonly call: TresorBridgeCall
  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends AppEventName>(event: E, listener: (payload: AppEvents[E]) => void): () => void
}
