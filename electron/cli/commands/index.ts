import type { Command } from 'commander'
import type { CliContext } from '../context.js'
import { registerImageCommands } from './image.js'
import { registerVaultCommands } from './vault.js'
import { registerMachineCommands } from './machine.js'
import { registerBackupCommands } from './backup.js'
import { registerRestoreCommands } from './restore.js'
import { registerJobsCommands } from './jobs.js'
import { registerCatalogCommands } from './catalog.js'
import { registerServeCommand } from './serve.js'

export type RegisterCommands = (program: Command, ctx: CliContext) => void

/** One module per area; each adds its commands to the program. */
export const COMMAND_MODULES: RegisterCommands[] = [
  registerImageCommands,
  registerVaultCommands,
  registerMachineCommands,
  registerBackupCommands,
  registerRestoreCommands,
  registerJobsCommands,
  registerCatalogCommands,
  registerServeCommand,
]
