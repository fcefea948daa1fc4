/**
 * VHD (Virtual PC / Hyper-V "conectix" images): reader and writers. Work in progress.
 */
import { EngineError } from '../../errors.js'
import type { ImageWriter, WriterOptions } from '../types.js'
import type { FormatModule } from './contract.js'

export const vhdModule: FormatModule = {
  format: 'vhd',
  probe(head, _fileSize, tail) {
    const cookie = 'conectix'
    return head.subarray(0, 8).toString('latin1') === cookie || tail.subarray(tail.length - 512, tail.length - 504).toString('latin1') === cookie
  },
  async open(path) {
    throw new EngineError('IMAGE_UNSUPPORTED', `Reading VHD images is not available yet ("${path}").`)
  },
}

export async function createVhdWriter(path: string, _options: WriterOptions, _variant: { fixed: boolean }): Promise<ImageWriter> {
  throw new EngineError('UNSUPPORTED', `Writing VHD images is not available yet ("${path}").`)
}
