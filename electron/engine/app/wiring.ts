/**
 * The engine functions the app service calls for work beyond catalog queries. `createEngineWiring`
 * (engineWiring.ts) fills every slot from the engine areas; an empty slot makes the matching API
 * methods fail with UNSUPPORTED (never fake data). Tests inject fakes or leave slots empty.
 */
import type { RestoreSpec } from '../../shared/models.js'

export interface VaultWiring {
  /** Creates a vault in `path` and makes it the current vault of `home`. */
  init(home: string, input: { path: string; passphrase: string; storeInKeychain: boolean }): Promise<void>
  /** Registers an existing vault (rebuilding the catalog from it); passphrase null = use the keychain. */
  open(home: string, input: { path: string; passphrase: string | null; storeInKeychain: boolean }): Promise<void>
  /** Makes the current vault's key available (and optionally remembers it in the keychain). */
  unlock(home: string, input: { passphrase: string; storeInKeychain: boolean }): Promise<void>
  /** Forgets the unwrapped key (keychain entry included). */
  lock(home: string): Promise<void>
  /** Key facts of the current vault: booleans only, never key material. */
  keyFacts(home: string, vaultId: string): Promise<{ isOpen: boolean; hasKeychainKey: boolean; hasRecoveryKey: boolean; generation: number }>
}

export interface MachinesWiring {
  add(home: string, input: { name: string; diskPaths: string[]; policyId: string | null }): Promise<{ machineId: string }>
  import(home: string, input: { kind: 'libvirt' | 'vbox'; path: string }): Promise<{ machineId: string }>
}

export interface JobsWiring {
  /** Queues a backup job of the machine and returns at once. */
  startBackup(machineId: string): Promise<{ jobId: string }>
  /** Queues a verify job of the current vault. */
  startVerify(readData: boolean): Promise<{ jobId: string }>
  /** Queues a prune job (retention, then freeing space) of the current vault. */
  startPrune(): Promise<{ jobId: string }>
  /** Requests cancellation; resolves once the request is recorded (the outcome comes as an event). */
  cancel(jobId: string): Promise<void>
}

export interface RestoreWiring {
  enqueue(home: string, spec: RestoreSpec): Promise<{ itemId: string }>
  reorder(home: string, itemIds: string[]): Promise<void>
  cancel(home: string, itemId: string): Promise<void>
}

export interface EngineWiring {
  /** Changes made outside the service's own calls (a queued restore started or ended). */
  onChange?(listener: (what: 'restoreQueue') => void): () => void
  vault?: VaultWiring
  machines?: MachinesWiring
  jobs?: JobsWiring
  restore?: RestoreWiring
}

/** No engine at all: every engine-backed method answers UNSUPPORTED (tests of the service itself). */
export function defaultEngineWiring(): EngineWiring {
  return {}
}
