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

/**
 * One module per area; each adds its commands to the program. Registration runs for every
 * invocation (even --help), so a command module imports statically only what registration needs
 * (commander types, the CLI context, dependency-free constants such as engine/errors.ts) and loads
 * engine modules with `import()` inside its actions (types via `import type`). This keeps start-up
 * to what the chosen command uses; test/unit/cli/lazyLoad.test.ts checks it.
 */
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
