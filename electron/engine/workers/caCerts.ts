/**
 * NODE_EXTRA_CA_CERTS, kept aside while a Tresor process starts.
 *
 * Node reads and parses every certificate that variable names when a process starts, for TLS
 * clients; Tresor has none (its only network is the web host's loopback HTTP). With Debian's
 * bundle of ~140 certificates that is ~55 ms per process here (`node -e 0`: 0.06–0.10 s with it,
 * 0.02–0.04 s without), spent again by every command and every job process. So the command's first
 * line (bin/tresor.js, `env -S -u NODE_EXTRA_CA_CERTS TRESOR_EXTRA_CA_CERTS=${…}`) and `jobEnv`
 * (supervisor.ts) move it to SAVED_CA_CERTS before node starts, and `restoreExtraCaCerts` puts it
 * back as soon as the process runs: the programs Tresor starts (pre- and post-scripts, job
 * processes) see the environment the user set.
 */
export const SAVED_CA_CERTS = 'TRESOR_EXTRA_CA_CERTS'

/** Puts NODE_EXTRA_CA_CERTS back from SAVED_CA_CERTS (empty: it was not set) and removes the latter. */
export function restoreExtraCaCerts(env: NodeJS.ProcessEnv = process.env): void {
  const saved = env[SAVED_CA_CERTS]
  if (saved === undefined) return
  delete env[SAVED_CA_CERTS]
  if (saved !== '') env.NODE_EXTRA_CA_CERTS = saved
}

/** `env` with NODE_EXTRA_CA_CERTS moved to SAVED_CA_CERTS, for a Tresor process about to start. */
export function setCaCertsAside(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const ca = env.NODE_EXTRA_CA_CERTS
  if (ca === undefined) return env
  const { NODE_EXTRA_CA_CERTS: _moved, ...rest } = env
  return { ...rest, [SAVED_CA_CERTS]: ca }
}
