/**
 * App service: the implementation of the IPC contract (`AppApi` of electron/shared/ipc.ts) shared
 * by Electron main and the web host. It adapts; it does not back up, restore or encrypt.
 *
 * Terms
 * - host: who runs the service (Electron main or `tresor serve`); it supplies host-only features
 *   (file dialogs, opening links in the system browser) through `AppHost`.
 * - engine functions: what the other engine areas publish (vault, keys, machines, jobs, restore).
 *   The service calls them through `EngineWiring`; a method whose engine part is not published yet
 *   fails with UNSUPPORTED, never with made-up data.
 * - emit: pushes an event (electron/shared/ipc.ts EVENTS) to every connected renderer.
 *
 * Inputs arrive validated (the hosts call `parseInput` first); everything the service returns is
 * plain data that matches the contract's output schema and carries no secret.
 */
export { createAppService, type AppHost, type AppService, type AppServiceDeps } from './service.js'
export { defaultEngineWiring, type EngineWiring } from './wiring.js'
export { createEngineWiring, toRestoreJobInput, type EngineWiringOptions, type WiredEngine } from './engineWiring.js'
