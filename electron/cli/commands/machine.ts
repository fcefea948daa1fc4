import { resolve } from 'node:path'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'
import { usage } from '../context.js'
import { readFile } from 'node:fs/promises'
import { EngineError } from '../../engine/errors.js'
import type { ImportedMachine, Machine, NewDisk } from '../../engine/backup/index.js'
import { formatBytes } from '../format.js'

/** The catalog and the machine store, loaded when a machine command runs. */
async function engine() {
  const [{ openCatalog }, machines] = await Promise.all([import('../../engine/catalog/index.js'), import('../../engine/backup/machines.js')])
  return { openCatalog, ...machines }
}

function machineJson(m: Machine) {
  return {
    id: m.id,
    name: m.name,
    source: m.source,
    sourcePath: m.sourcePath,
    policyId: m.policyId,
    protectedBytes: m.protectedBytes,
    createdAt: m.createdAt,
    disks: m.disks.map((d) => ({ name: d.name, path: d.path, position: d.position, isSystem: d.isSystem, isExcluded: d.isExcluded })),
  }
}

function describe(m: Machine): string {
  const lines = [`${m.name}  (${m.id})  protected ${formatBytes(m.protectedBytes)}${m.source !== 'files' ? `  from ${m.source} ${m.sourcePath ?? ''}` : ''}`]
  for (const d of m.disks) {
    const flags = [d.isSystem ? 'system' : '', d.isExcluded ? 'excluded' : ''].filter(Boolean).join(', ')
    lines.push(`  ${d.position}  ${d.name}  ${d.path}${flags ? `  [${flags}]` : ''}`)
  }
  return lines.join('\n')
}

/**
 * `tresor machine add <name> <disk>... | --libvirt <xml> | --vbox <file>` → {machineId},
 * `tresor machine list`, `tresor machine exclude|include <machine> <disk>...`,
 * `tresor machine add-disk <machine> <disk>`, `tresor machine remove <machine>`.
 */
export function registerMachineCommands(program: Command, ctx: CliContext): void {
  const machine = program.command('machine').description('protect virtual machines: add, list, exclude disks')

  machine
    .command('add [name] [disks...]')
    .description('protect a machine made of disk image files, or import one from libvirt or VirtualBox')
    .option('--libvirt <xml>', 'import from a libvirt domain XML (virsh dumpxml NAME > vm.xml)')
    .option('--vbox <file>', 'import from a VirtualBox .vbox machine file')
    .option('--exclude <disk...>', 'disk names (or file paths) to exclude, e.g. a swap disk')
    .option('--system <disk>', 'the system disk (name or path; default: the first, or what the import says)')
    .action((name: string | undefined, disks: string[], opts: { libvirt?: string; vbox?: string; exclude?: string[]; system?: string }) => {
      if (opts.libvirt && opts.vbox) usage('Give either --libvirt or --vbox, not both.')
      const importing = opts.libvirt ?? opts.vbox
      if (importing && disks.length > 0) usage('Disk files come from the imported definition; do not list them as well.')
      if (!importing && (!name || disks.length === 0)) usage('Usage: tresor machine add <name> <disk>... (or --libvirt <xml> / --vbox <file>)')
      return (async () => {
        const [{ openCatalog, addMachine, defaultDiskName }, importers] = await Promise.all([
          engine(),
          importing ? import('../../engine/backup/importers.js') : undefined,
        ])
        let imported: ImportedMachine | undefined
        if (opts.libvirt) imported = await importers!.importLibvirt(opts.libvirt)
        if (opts.vbox) imported = await importers!.importVbox(opts.vbox)
        for (const w of imported?.warnings ?? []) ctx.warn(w)
        const list: NewDisk[] = imported ? imported.disks : disks.map((path) => ({ path }))
        const matches = (d: { name?: string; path: string }, ref: string): boolean =>
          (d.name ?? defaultDiskName(d.path)) === ref || d.path === ref || resolve(d.path) === resolve(ref) || d.path.endsWith(`/${ref}`)
        const exclude = opts.exclude ?? []
        const withFlags = list.map((d) => ({
          ...d,
          isExcluded: d.isExcluded === true || exclude.some((ref) => matches(d, ref)),
          ...(opts.system !== undefined ? { isSystem: matches(d, opts.system) } : {}),
        }))
        if (opts.system !== undefined && !withFlags.some((d) => d.isSystem)) usage(`--system ${opts.system} names none of the disks.`)
        const db = openCatalog(ctx.home())
        try {
          const m = addMachine(db, {
            name: name ?? imported!.name,
            disks: withFlags,
            ...(imported ? { source: imported.source, sourcePath: imported.sourcePath } : {}),
          })
          ctx.print({ machineId: m.id }, () => `Machine "${m.name}" is protected (${m.id}).\n${describe(m)}`)
        } finally {
          db.close()
        }
      })()
    })

  machine
    .command('list')
    .description('list protected machines and their disks')
    .action(async () => {
      const { openCatalog, listMachines } = await engine()
      const db = openCatalog(ctx.home())
      try {
        const machines = listMachines(db)
        ctx.print(machines.map(machineJson), () => (machines.length === 0 ? 'No machine is protected yet. Add one with "tresor machine add".' : machines.map(describe).join('\n\n')))
      } finally {
        db.close()
      }
    })

  for (const [cmd, excluded] of [['exclude', true], ['include', false]] as const) {
    machine
      .command(`${cmd} <machine> <disks...>`)
      .description(excluded ? 'exclude disks (by name or position) from backups: temporary or swap disks' : 'include excluded disks again')
      .action(async (ref: string, disks: string[]) => {
        const { openCatalog, setDisksExcluded } = await engine()
        const db = openCatalog(ctx.home())
        try {
          const m = setDisksExcluded(db, ref, disks, excluded)
          ctx.print(machineJson(m), () => describe(m))
        } finally {
          db.close()
        }
      })
  }

  machine
    .command('add-disk <machine> <disk>')
    .description('add a disk image to a protected machine (its first backup is full, the others stay incremental)')
    .option('--name <name>', 'disk name (default: the file name)')
    .option('--system', 'mark it as the system disk')
    .action(async (ref: string, path: string, opts: { name?: string; system?: boolean }) => {
      const { openCatalog, addDisk, getMachine } = await engine()
      const db = openCatalog(ctx.home())
      try {
        const d = addDisk(db, ref, { path, ...(opts.name ? { name: opts.name } : {}), isSystem: opts.system === true })
        const m = getMachine(db, d.machineId)
        ctx.print({ diskId: d.id, name: d.name }, () => describe(m))
      } finally {
        db.close()
      }
    })

  machine
    .command('remove <machine>')
    .description('stop protecting a machine (its recovery points stay in the vault)')
    .action(async (ref: string) => {
      const [{ openCatalog, getMachine, removeMachine }, { removeMachineSnapshotClones }] = await Promise.all([
        engine(),
        import('../../engine/backup/snapshotTier.js'),
      ])
      const db = openCatalog(ctx.home())
      try {
        const m = getMachine(db, ref)
        const clones = await removeMachineSnapshotClones(db, m.id) // before the row: clone rows cascade with it
        removeMachine(db, m.id)
        ctx.print({ machineId: m.id, clonesRemoved: clones },
          `Machine "${m.name}" is no longer protected; its recovery points stay in the vault${clones.length ? ` (${clones.length} instant-restore copy(ies) removed)` : ''}.`)
      } finally {
        db.close()
      }
    })

  machine
    .command('policy <machine> [file]')
    .description('show the policy a machine runs with, or set it from a JSON file (schedule, retention, snapshotTierDays, scripts, failOnInconsistent)')
    .action(async (ref: string, file: string | undefined) => {
      const [{ openCatalog, getMachine, setMachinePolicy }, { policyForMachine, savePolicy }] = await Promise.all([engine(), import('../../engine/policy/index.js')])
      const db = openCatalog(ctx.home())
      try {
        const m = getMachine(db, ref)
        if (file !== undefined) {
          let spec: unknown
          try {
            spec = JSON.parse(await readFile(file, 'utf8'))
          } catch (err) {
            throw new EngineError('INVALID_INPUT', `"${file}" is not a readable JSON policy file.`, { cause: err })
          }
          const id = savePolicy(db, `machine:${m.name}`, spec as never)
          setMachinePolicy(db, m.id, id)
        }
        const policy = policyForMachine(db, m.id)
        ctx.print(policy, () => JSON.stringify(policy, null, 2))
      } finally {
        db.close()
      }
    })
}
