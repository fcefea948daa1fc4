/**
 * VHDX (Hyper-V) images: reader and writer. Work in progress.
 */
import { EngineError } from '../../errors.js'
import type { ImageWriter, WriterOptions } from '../types.js'
import type { FormatModule } from '../open.js'

export const vhdxModule: FormatModule = {
  format: 'vhdx',
  probe(head) {
    return head.subarray(0, 8).toString('latin1') === 'vhdxfile'
  },
  async open(path) {
    throw new EngineError('IMAGE_UNSUPPORTED', `Reading VHDX images is not available yet ("${path}").`)
  },
}

export async function createVhdxWriter(path: string, _options: WriterOptions): Promise<ImageWriter> {
  throw new EngineError('UNSUPPORTED', `Writing VHDX images is not available yet ("${path}").`)
}
