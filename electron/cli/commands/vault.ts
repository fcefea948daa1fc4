import { existsSync, readdirSync, statSync } from 'node:fs'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { createInterface } from 'node:readline/promises'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'
import { usage } from '../context.js'
import { EngineError } from '../../engine/errors.js'
import { withChunkWorkers } from '../workers.js'
import type { LockInfo } from '../../engine/vault/index.js'
import type { KeychainState, openCurrentVault } from '../../engine/keys/index.js'
import type { NativeMemoryState } from '../../engine/io/nativeMemory.js'
import type { NativeDigestState } from '../../engine/vault/pieceDigests.js'

let loading: ReturnType<typeof load> | undefined

async function load() {
  const [catalog, vaults, vault, locks, keys, memory, digest] = await Promise.all([
    import('../../engine/catalog/index.js'),
    import('../../engine/catalog/vaults.js'),
    import('../../engine/vault/index.js'),
    import('../../engine/vault/locks.js'),
    import('../../engine/keys/index.js'),
    import('../../engine/io/nativeMemory.js'),
    import('../../engine/vault/pieceDigests.js'),
  ])
  return { ...catalog, ...vaults, ...vault, ...locks, ...keys, nativeMemoryState: memory.nativeMemoryState, nativeDigestState: digest.nativeDigestState }
}

/** The catalog, vault and key modules, loaded once when a vault command runs (not for --help). */
function engine(): ReturnType<typeof load> {
  return (loading ??= load())
}

/**
 * `tresor vault init|open|info|passwd|export-recovery-key|unlock`, `tresor verify`, `tresor prune`.
 * Every command that needs the vault key goes through openCurrentVault / resolveVaultKey
 * (keychain → TRESOR_PASSPHRASE → prompt).
 */
export function registerVaultCommands(program: Command, ctx: CliContext): void {
  const vault = program.command('vault').description('create, register and manage the vault')

  vault
    .command('init <dir>')
    .description('create a new vault in an empty folder and make it the current vault')
    .option('--block-size <bytes>', 'vault block size (power of two, 64 KiB to 4 MiB)')
    .option(
      '--format <version>',
      'vault format: 3 (the default) stores compressible blocks as content-defined parts, so text at shifted offsets deduplicates, and a block none of whose parts is stored yet as one record; 2 stores every such block as parts (slower on real files); 1 stores every block whole (a larger vault)',
    )
    .action(async (dir: string, opts: { blockSize?: string; format?: string }) => {
      const path = resolve(dir)
      const blockSize = opts.blockSize === undefined ? undefined : parseSize(opts.blockSize)
      if (opts.format !== undefined && !['1', '2', '3'].includes(opts.format)) {
        throw new EngineError('INVALID_INPUT', `--format takes 1, 2 or 3 (got "${opts.format}").`)
      }
      const formatVersion = opts.format === undefined ? undefined : Number(opts.format)
      // Checked before asking for a passphrase (createVault checks again).
      if (existsSync(path) && (!statSync(path).isDirectory() || readdirSync(path).length > 0)) {
        throw new EngineError('ALREADY_EXISTS', `"${path}" is not an empty folder. Choose an empty or new folder for the vault.`)
      }
      const { chooseNewPassphrase, generateMasterKey, wrapWithPassphrase, createVault, openCatalog, registerVault } = await engine()
      const passphrase = await chooseNewPassphrase({ envVars: ['TRESOR_NEW_PASSPHRASE', 'TRESOR_PASSPHRASE'] })
      const masterKey = generateMasterKey()
      const slot = await wrapWithPassphrase(masterKey, passphrase)
      const { vaultId } = await createVault(path, { masterKey, keySlots: { passphrase: slot }, ...(blockSize ? { blockSize } : {}), ...(formatVersion ? { formatVersion } : {}) })
      const generation = 1 // createVault writes generation 1
      const catalog = openCatalog(ctx.home())
      try {
        registerVault(catalog, { id: vaultId, path, lastGeneration: generation }, { makeCurrent: true })
      } finally {
        catalog.close()
      }
      const keychain = await cacheKey(vaultId, masterKey, generation)
      ctx.print({ vaultId }, () =>
        [
          `Vault ${vaultId} created in ${path}; it is now the current vault.`,
          keychain.available
            ? 'Its key is kept in the system keychain, so scheduled backups run unattended.'
            : (keychain.reason ?? 'The system keychain is not available; Tresor will ask for the passphrase.'),
          'Keep the passphrase safe: without it (or a recovery key) the backups cannot be read.',
          'Make a recovery key now with "tresor vault export-recovery-key".',
        ].join('\n'),
      )
    })

  vault
    .command('open <dir>')
    .description('register an existing vault, make it current and rebuild the catalog from it')
    .option('--accept-rollback', 'accept a vault older than the one last seen (an older copy restored on purpose)')
    .action(async (dir: string, opts: { acceptRollback?: boolean }) => {
      const { openCurrentVault } = await engine()
      const session = await openCurrentVault(ctx.home(), { vaultOverride: resolve(dir), makeCurrent: true, acceptRollback: opts.acceptRollback === true, rebuildPoints: true })
      try {
        const points = session.pointsReconciled ?? 0
        ctx.print({ vaultId: session.vaultId, points }, `Vault ${session.vaultId} (${session.path}) is now the current vault: ${points} recovery point(s).`)
      } finally {
        await session.close()
      }
    })

  vault
    .command('info')
    .description('describe the current vault')
    .action(async () => {
      const { openCurrentVault, readVaultHeader, defaultKeyStore, getVaultByPath, nativeMemoryState, nativeDigestState } = await engine()
      const memory = nativeMemoryState()
      const digest = nativeDigestState()
      let session: Session
      try {
        session = await openCurrentVault(ctx.home(), vaultTarget(ctx))
      } catch (err) {
        if (!(err instanceof EngineError && err.code === 'PASSPHRASE_REQUIRED')) throw err
        // Locked (no keychain key, no passphrase): what can be read without the key.
        const path = await vaultPath(ctx)
        const header = await readVaultHeader(path)
        const keychain = await defaultKeyStore().state()
        const info = {
          vaultId: header.vaultId,
          path,
          formatVersion: header.formatVersion,
          blockSize: header.blockSize,
          locked: true,
          keySlots: { passphrase: header.keySlots.passphrase !== undefined, recovery: header.keySlots.recovery != null },
          keychain: { ...keychain, hasKey: false },
          memory,
          digest,
        }
        ctx.print(info, () =>
          [
            `Vault      ${info.vaultId} (locked: give the passphrase with TRESOR_PASSPHRASE or run in a terminal for details)`,
            `Path       ${info.path}`,
            `Format     version ${info.formatVersion}, block size ${info.blockSize} bytes`,
            `Keychain   ${keychainText(info.keychain)}`,
            `Memory     ${memoryText(info.memory)}`,
            `Hashing    ${digestText(info.digest)}`,
          ].join('\n'),
        )
        return
      }
      try {
        const header = await readVaultHeader(session.path)
        const stats = await session.vault.stats()
        const generation = await session.vault.generation()
        const row = getVaultByPath(session.catalog, session.path)
        const info = {
          vaultId: session.vaultId,
          path: session.path,
          formatVersion: header.formatVersion,
          blockSize: session.vault.blockSize,
          generation,
          lastGenerationSeen: row?.lastGeneration ?? generation,
          isCurrent: row?.isCurrent ?? false,
          stats,
          keySlots: { passphrase: header.keySlots.passphrase !== undefined, recovery: header.keySlots.recovery != null },
          keychain: { ...session.keychain, hasKey: session.keyInKeychain },
          keySource: session.keySource,
          memory,
          digest,
        }
        ctx.print(info, () =>
          [
            `Vault      ${info.vaultId}${info.isCurrent ? ' (current)' : ''}`,
            `Path       ${info.path}`,
            `Format     version ${info.formatVersion}, block size ${info.blockSize} bytes`,
            `Generation ${generation}`,
            `Contents   ${JSON.stringify(stats)}`,
            `Key slots  passphrase${info.keySlots.recovery ? ', recovery key' : ' (no recovery key: make one with "tresor vault export-recovery-key")'}`,
            `Keychain   ${keychainText(info.keychain)}`,
            `Memory     ${memoryText(info.memory)}`,
            `Hashing    ${digestText(info.digest)}`,
          ].join('\n'),
        )
      } finally {
        await session.close()
      }
    })

  vault
    .command('passwd')
    .description('change the vault passphrase (re-wraps the key; data is not re-encrypted)')
    .option('--with-recovery-key', 'prove access with the recovery key instead of the current passphrase')
    .action(async (opts: { withRecoveryKey?: boolean }) => {
      const { readVaultHeader, takeSecretEnv, unwrapWithRecoveryKey, unwrapWithPassphrase, chooseNewPassphrase, wrapWithPassphrase, updateKeySlots } = await engine()
      const path = await vaultPath(ctx)
      const header = await readVaultHeader(path)
      let masterKey: Buffer
      if (opts.withRecoveryKey) {
        const text = takeSecretEnv('TRESOR_RECOVERY_KEY') ?? (await askOrRequire('Recovery key: ', 'TRESOR_RECOVERY_KEY'))
        masterKey = await unwrapWithRecoveryKey(header.keySlots.recovery, text)
      } else {
        const old = takeSecretEnv('TRESOR_PASSPHRASE') ?? (await askOrRequire('Current vault passphrase: ', 'TRESOR_PASSPHRASE'))
        masterKey = await unwrapWithPassphrase(header.keySlots.passphrase, old)
      }
      const passphrase = await chooseNewPassphrase({ envVars: ['TRESOR_NEW_PASSPHRASE'] })
      const slot = await wrapWithPassphrase(masterKey, passphrase)
      // One atomic config replacement (temp → fsync → rename → fsync dir): after a crash exactly
      // the old or the new passphrase works. The recovery slot is kept as it is.
      await updateKeySlots(path, masterKey, { passphrase: slot, ...(header.keySlots.recovery != null ? { recovery: header.keySlots.recovery } : {}) })
      const keychain = await cacheKey(header.vaultId, masterKey)
      ctx.print({ vaultId: header.vaultId, changed: true, keychain: keychain.available }, 'The vault passphrase was changed. Use the new one from now on.')
    })

  vault
    .command('export-recovery-key')
    .description('make the one-time recovery key (prints it once; store it offline)')
    .option('--replace', 'replace an existing recovery key (the old one stops working)')
    .action(async (opts: { replace?: boolean }) => {
      const { readVaultHeader, defaultKeyStore, resolveVaultKey, generateRecoveryKey, wrapWithRecoveryKey, updateKeySlots } = await engine()
      const path = await vaultPath(ctx)
      const header = await readVaultHeader(path)
      if (header.keySlots.recovery != null && !opts.replace) {
        throw new EngineError(
          'ALREADY_EXISTS',
          'This vault already has a recovery key. Run "tresor vault export-recovery-key --replace" to make a new one (the old one then stops working).',
        )
      }
      const store = defaultKeyStore()
      let key = await resolveVaultKey({ vaultId: header.vaultId, keySlots: header.keySlots, keyStore: store })
      const recovery = generateRecoveryKey()
      const slot = await wrapWithRecoveryKey(key.masterKey, recovery)
      try {
        await updateKeySlots(path, key.masterKey, { passphrase: header.keySlots.passphrase, recovery: slot })
      } catch (err) {
        if (!(key.source === 'keychain' && err instanceof EngineError && err.code === 'WRONG_PASSPHRASE')) throw err
        key = await resolveVaultKey({ vaultId: header.vaultId, keySlots: header.keySlots, keyStore: store, skipKeychain: true })
        await updateKeySlots(path, key.masterKey, { passphrase: header.keySlots.passphrase, recovery: slot })
      }
      ctx.print({ vaultId: header.vaultId, recoveryKey: recovery.text }, () =>
        [
          'Recovery key for vault ' + header.vaultId + ':',
          '',
          '    ' + recovery.text,
          '',
          'Write it down and keep it offline. It opens the vault if the passphrase is lost',
          '("tresor vault passwd --with-recovery-key"). It is shown only this once.',
        ].join('\n'),
      )
    })

  vault
    .command('unlock')
    .description('remove stale locks left by crashed or vanished processes')
    .option('--force', 'also remove locks held by other computers or live-looking processes (after confirmation)')
    .option('--yes', 'do not ask for confirmation')
    .action(async (opts: { force?: boolean; yes?: boolean }) => {
      await unlockVault(ctx, opts)
    })

  program
    .command('verify')
    .description('check the vault; with --read-data decrypt and re-hash every chunk')
    .option('--read-data', 'read, decrypt and re-hash all data (slow)')
    .action((opts: { readData?: boolean }) => withChunkWorkers('verify', { readData: opts.readData === true }, () => verify(opts)))

  async function verify(opts: { readData?: boolean }): Promise<void> {
    const { openCurrentVault } = await engine()
    const session = await openCurrentVault(ctx.home(), vaultTarget(ctx))
    try {
      const { jobLockOptions } = await import('../../engine/vault/locks.js')
      const report = await session.vault.verify({
        readData: opts.readData === true,
        // like `tresor backup`: wait for a prune to finish, saying so on stderr
        lock: jobLockOptions(ctx.warn),
        onProgress: (p) => ctx.progress(`verify ${p.phase} ${p.done}/${p.total}`),
      })
      ctx.print(report, () => verifyText(report))
      if (!report.ok) process.exitCode = 1
    } finally {
      await session.close()
    }
  }

  program
    .command('prune')
    .description('apply retention (each machine\'s policy) and free the space of unreferenced data')
    .option('--dry-run', 'only list the recovery points retention would remove')
    .option('--max-unused <percent>', 'unused space the vault may keep, in % of its data (default 5): packs are rewritten until at most this much stays unused; 100 rewrites nothing')
    .action(async (opts: { dryRun?: boolean; maxUnused?: string }) => {
      const maxUnused = opts.maxUnused === undefined ? undefined : parsePercent(opts.maxUnused, '--max-unused')
      const { openCurrentVault } = await engine()
      const session = await openCurrentVault(ctx.home(), vaultTarget(ctx))
      try {
        const { runRetentionPrune } = await import('../../engine/policy/prune.js')
        const result = await runRetentionPrune(session, {
          dryRun: opts.dryRun === true,
          ...(maxUnused === undefined ? {} : { maxUnused }),
          onProgress: (p) => ctx.progress(`prune ${p.phase} ${p.done}/${p.total}`),
        })
        warnClonesNotRemoved(result.clonesNotRemoved)
        ctx.print(result, () =>
          opts.dryRun
            ? `${result.removed.length} recovery point(s) would be removed${result.removed.length ? ': ' + result.removed.join(', ') : ''}.`
            : `${result.pointsRemoved} recovery point(s) removed, ${result.bytesFreed} bytes freed.`,
        )
      } finally {
        await session.close()
      }
    })

  program
    .command('forget <point...>')
    .description('delete recovery points (by id or unique id prefix); "tresor prune" then frees their space')
    .action(async (refs: string[]) => {
      const { openCurrentVault } = await engine()
      const session = await openCurrentVault(ctx.home(), vaultTarget(ctx))
      try {
        const points = await session.vault.listPoints()
        const ids = refs.map((ref) => {
          const matches = points.filter((p) => p.id === ref || p.id.startsWith(ref))
          if (matches.length === 0) throw new EngineError('POINT_NOT_FOUND', `No recovery point "${ref}" in this vault. List them with "tresor points".`)
          if (matches.length > 1) throw new EngineError('INVALID_INPUT', `"${ref}" matches ${matches.length} recovery points: give more of the id.`)
          return matches[0]!.id
        })
        const unique = [...new Set(ids)]
        const removed = await session.vault.deletePoints(unique)
        const { deletePointRows } = await engine()
        deletePointRows(session.catalog, unique)
        await session.recordGeneration()
        const { removePointClones } = await import('../../engine/policy/prune.js')
        const clones = await removePointClones(session.catalog, unique)
        warnClonesNotRemoved(clones.failed)
        ctx.print({ pointsRemoved: removed, ids: unique, clonesRemoved: clones.removed, clonesNotRemoved: clones.failed },
          `${removed} recovery point(s) deleted${clones.removed.length ? `, ${clones.removed.length} instant-restore copy(ies) removed` : ''}. Run "tresor prune" to free their space.`)
      } finally {
        await session.close()
      }
    })
}

function vaultTarget(ctx: CliContext): { vaultOverride?: string } {
  const override = ctx.vaultOverride()
  return override === undefined ? {} : { vaultOverride: override }
}

/** The vault folder a command acts on: --vault, else the catalog's current vault. */
async function vaultPath(ctx: CliContext): Promise<string> {
  const override = ctx.vaultOverride()
  if (override !== undefined) return override
  const { openCatalog, getCurrentVault } = await engine()
  const catalog = openCatalog(ctx.home())
  try {
    const row = getCurrentVault(catalog)
    if (!row) {
      throw new EngineError(
        'VAULT_NOT_CONFIGURED',
        `No vault is set up for "${ctx.home()}". Create one with "tresor vault init <dir>" or register one with "tresor vault open <dir>".`,
      )
    }
    return row.path
  } finally {
    catalog.close()
  }
}

async function askOrRequire(question: string, envVar: string): Promise<string> {
  const { canPrompt, promptSecret } = await engine()
  if (!canPrompt()) throw new EngineError('PASSPHRASE_REQUIRED', `Run the command in a terminal to type it, or set ${envVar}.`)
  return promptSecret(question)
}

/** Stores the key (and generation) in the keychain when available; never fails the command. */
async function cacheKey(vaultId: string, masterKey: Buffer, generation?: number): Promise<KeychainState> {
  const { defaultKeyStore } = await engine()
  const store = defaultKeyStore()
  try {
    await store.setKey(vaultId, masterKey)
    if (generation !== undefined) await store.setGeneration(vaultId, generation)
    return { available: true, backend: store.backend }
  } catch (err) {
    return { available: false, backend: store.backend, reason: err instanceof EngineError ? err.userMessage : String(err) }
  }
}

function keychainText(k: KeychainState & { hasKey: boolean }): string {
  if (!k.available) return `not available (${k.reason ?? 'unknown'})`
  return `${k.backend}, ${k.hasKey ? 'holds the vault key' : 'does not hold the vault key'}`
}

function memoryText(m: NativeMemoryState): string {
  if (!m.addon) return `native addon tresor-memory missing (rebuild it with "npm rebuild tresor-memory"); huge pages ${m.hugePages}`
  return `native addon loaded; huge pages for direct I/O ${m.hugePages}`
}

function digestText(d: NativeDigestState): string {
  if (!d.addon) return `native addon tresor-digest missing (rebuild it with "npm rebuild tresor-digest"); chunk ids one per call, parts cut in ${d.cuts}, AES-GCM ${d.cipher}, slower`
  const cuts = d.cuts === 'native' ? 'natively' : `in ${d.cuts}`
  const cipher = d.cipher.startsWith('native, ') ? `natively${d.cipher.slice('native'.length)}` : d.cipher
  return `native addon loaded; chunk ids and checksums ${d.pieces}; parts cut ${cuts}; AES-GCM ${cipher}`
}

function parseSize(text: string): number {
  const m = /^(\d+)\s*([kKmM]i?[bB]?)?$/.exec(text.trim())
  if (!m) usage(`invalid size "${text}" (examples: 1048576, 1M, 256K)`)
  const unit = (m[2] ?? '').toUpperCase()
  return Number(m[1]) * (unit.startsWith('K') ? 1024 : unit.startsWith('M') ? 1024 * 1024 : 1)
}

interface ReportLike {
  ok: boolean
  problems: { kind: string; object: string; message: string; affectedPoints: { pointId: string; disks: string[] }[] }[]
}

function verifyText(report: ReportLike): string {
  if (report.ok) return 'The vault is intact.'
  const lines = [`The vault has ${report.problems.length} problem(s):`]
  for (const p of report.problems) {
    lines.push(`- ${p.object}: ${p.message}`)
    for (const a of p.affectedPoints) lines.push(`    affects recovery point ${a.pointId}${a.disks.length ? ` (disks: ${a.disks.join(', ')})` : ''}`)
  }
  return lines.join('\n')
}

type Session = Awaited<ReturnType<typeof openCurrentVault>>

/** A percentage 0..100 given on the command line, as a fraction; a usage error otherwise. */
function parsePercent(text: string, option: string): number {
  const value = Number(text.trim().replace(/%$/, ''))
  if (text.trim() === '' || !Number.isFinite(value) || value < 0 || value > 100) usage(`${option} takes a percentage from 0 to 100 (got "${text}")`)
  return value / 100
}

/** Writes a warning for each snapshot-tier clone that could not be removed (its catalog row stays, so the next backup's tier prune retries it). */
function warnClonesNotRemoved(failed: Array<{ clonePath: string; reason: string }>): void {
  for (const f of failed) process.stderr.write(`warning: could not remove the instant-restore copy "${f.clonePath}" (${f.reason}); delete it by hand if it stays.\n`)
}

/**
 * Lock clean-up. Without --force only locks of dead processes on this computer go (what any vault
 * operation would also do). With --force, stale locks (not refreshed within the lock lifetime, any
 * host) go too, after confirmation. Fresh locks of running operations are never removed (I13).
 */
async function unlockVault(ctx: CliContext, opts: { force?: boolean; yes?: boolean }): Promise<void> {
  const { readVaultHeader, listLocks, isProcessAlive, DEFAULT_LOCK_LIFETIME_MS, breakLock } = await engine()
  const path = await vaultPath(ctx)
  await readVaultHeader(path)
  const locks = await listLocks(path)
  const now = Date.now()
  const host = hostname()
  const dead = locks.filter((l) => l.host === host && l.pid > 0 && !isProcessAlive(l.pid))
  const stale = locks.filter((l) => !dead.includes(l) && now - l.refreshedAt > DEFAULT_LOCK_LIFETIME_MS)
  const live = locks.filter((l) => !dead.includes(l) && !stale.includes(l))
  let chosen = dead
  if (opts.force && stale.length > 0) {
    const list = stale.map((l) => `  ${l.id}: ${l.kind} lock, ${l.purpose || 'no purpose'}, host ${l.host}, pid ${l.pid}, last refreshed ${new Date(l.refreshedAt).toISOString()}`).join('\n')
    process.stderr.write(`Stale lock(s) on the vault "${path}":\n${list}\nRemove them only if no other computer is using this vault right now.\n`)
    let confirmed = opts.yes === true
    if (!confirmed) {
      if (!process.stdin.isTTY) usage('confirm with --yes to remove stale locks when not running in a terminal')
      const rl = createInterface({ input: process.stdin, output: process.stderr })
      try {
        confirmed = /^y(es)?$/i.test((await rl.question(`Remove ${stale.length} stale lock(s)? [y/N] `)).trim())
      } finally {
        rl.close()
      }
    }
    if (!confirmed) throw new EngineError('CANCELLED', 'Nothing was removed.')
    chosen = [...dead, ...stale]
  }
  const removed = chosen.length > 0 ? await breakLock(path, { ids: chosen.map((l) => l.id) }) : []
  const kept = locks.filter((l) => !removed.some((r) => r.id === l.id))
  const describe = (l: LockInfo) => ({ id: l.id, kind: l.kind, host: l.host, pid: l.pid, purpose: l.purpose, refreshedAt: new Date(l.refreshedAt).toISOString(), stale: stale.includes(l) })
  ctx.print({ removed: removed.map(describe), kept: kept.map(describe) }, () => {
    const lines = [`${removed.length} lock(s) removed.`]
    if (live.length > 0) lines.push(`${live.length} lock(s) belong to running operations and were kept.`)
    if (!opts.force && stale.length > 0) lines.push(`${stale.length} stale lock(s) were kept: remove them with "tresor vault unlock --force".`)
    return lines.join('\n')
  })
}
