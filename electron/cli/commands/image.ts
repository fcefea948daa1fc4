import { stat } from 'node:fs/promises'
import type { Command } from 'commander'
import { usage, type CliContext } from '../context.js'
import { EngineError } from '../../engine/errors.js'
import type { ImageInfo, WriterFormat } from '../../engine/formats/index.js'
import { WRITER_FORMATS } from '../../engine/formats/types.js'
import { formatBytes } from '../format.js'

function describe(path: string, info: ImageInfo): string {
  const lines = [
    `image: ${path}`,
    `format: ${info.format} (${info.variant})`,
    `virtual size: ${formatBytes(info.virtualSize)} (${info.virtualSize} bytes)`,
    `allocated: ${formatBytes(info.allocatedBytes)} (${info.allocatedBytes} bytes)`,
    `cluster size: ${info.clusterSize}`,
  ]
  if (info.logicalSectorSize !== undefined) lines.push(`logical sector size: ${info.logicalSectorSize}`)
  if (info.backingChain.length > 0) {
    lines.push('backing chain:')
    for (const b of info.backingChain) lines.push(`  ${b.path} (${b.format} ${b.variant}, ${formatBytes(b.virtualSize)})`)
  }
  if (info.snapshots && info.snapshots.length > 0) {
    lines.push('snapshots:')
    for (const s of info.snapshots) lines.push(`  ${s.id} ${s.name} (${new Date(s.dateSeconds * 1000).toISOString()}, vm state ${formatBytes(s.vmStateBytes)})`)
  }
  if (info.dirtyBitmaps && info.dirtyBitmaps.length > 0) {
    lines.push('dirty bitmaps:')
    for (const b of info.dirtyBitmaps) lines.push(`  ${b.name} (granularity ${b.granularityBytes}${b.enabled ? '' : ', disabled'})`)
  }
  return lines.join('\n')
}

/** `tresor image info` and `tresor image convert` (DESIGN.md CLI contract). */
export function registerImageCommands(program: Command, ctx: CliContext): void {
  const image = program.command('image').description('inspect and convert disk images (raw, qcow2, VHD, VHDX, VMDK)')

  image
    .command('info <file>')
    .description('describe an image: format, sizes, backing chain, snapshots, dirty bitmaps')
    .action(async (file: string) => {
      const { openImage } = await import('../../engine/formats/index.js')
      const img = await openImage(file)
      try {
        const info = await img.info()
        ctx.print(info, () => describe(file, info))
      } finally {
        await img.close()
      }
    })

  image
    .command('convert <in> <out>')
    .description('write the guest view of <in> as a new image <out>')
    .requiredOption('--to <format>', `output format: ${WRITER_FORMATS.join('|')}`)
    .option('--force', 'overwrite <out> if it exists')
    .option('--compress', 'qcow2 only: compress clusters with zstd')
    .option('--cluster-size <bytes>', 'cluster or block size of the new image')
    .action(async (input: string, output: string, opts: { to: string; force?: boolean; compress?: boolean; clusterSize?: string }) => {
      if (!(WRITER_FORMATS as readonly string[]).includes(opts.to)) usage(`--to must be one of ${WRITER_FORMATS.join(', ')} (got "${opts.to}")`)
      if (opts.compress && opts.to !== 'qcow2') usage('--compress applies to --to qcow2 only')
      let clusterSize: number | undefined
      if (opts.clusterSize !== undefined) {
        clusterSize = Number(opts.clusterSize)
        if (!Number.isSafeInteger(clusterSize) || clusterSize <= 0) usage(`--cluster-size must be a positive number of bytes (got "${opts.clusterSize}")`)
      }
      if (!opts.force) {
        const exists = await stat(output).then(() => true, () => false)
        if (exists) throw new EngineError('ALREADY_EXISTS', `"${output}" already exists. Pass --force to overwrite it.`)
      }
      const { convertImage } = await import('../../engine/formats/index.js')
      const started = Date.now()
      const controller = new AbortController()
      const onSignal = (): void => controller.abort()
      process.once('SIGINT', onSignal)
      try {
        const result = await convertImage(input, output, opts.to as WriterFormat, {
          overwrite: opts.force === true,
          signal: controller.signal,
          ...(clusterSize === undefined ? {} : { clusterSize }),
          ...(opts.compress ? { compress: true } : {}),
          onProgress: ({ doneBytes, totalBytes }) => {
            const pct = totalBytes === 0 ? 100 : Math.floor((doneBytes / totalBytes) * 100)
            const width = 30
            const filled = Math.round((pct / 100) * width)
            const secs = (Date.now() - started) / 1000
            const rate = secs > 0 ? doneBytes / secs : 0
            ctx.progress(`[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct}% ${formatBytes(doneBytes)}/${formatBytes(totalBytes)} ${formatBytes(rate)}/s`)
          },
        })
        ctx.progress('')
        ctx.print({ bytesWritten: result.bytesWritten }, `Wrote ${output} (${opts.to}, ${formatBytes(result.bytesWritten)} of data).`)
      } finally {
        process.removeListener('SIGINT', onSignal)
      }
    })
}
