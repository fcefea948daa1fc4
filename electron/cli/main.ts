import { Command, CommanderError } from 'commander'
import { createContext, UsageError } from './context.js'
import { EngineError } from '../engine/errors.js'
import { COMMAND_MODULES } from './commands/index.js'

/**
 * The `tresor` command line. Exit codes: 0 success, 1 failure (message on stderr), 2 usage error.
 * Each area registers its commands in electron/cli/commands/<area>.ts.
 */
export async function runCli(argv: string[]): Promise<number> {
  const program = new Command('tresor')
  program
    .description('Back up and restore local virtual machine disks: incremental, deduplicated, encrypted.')
    .option('--home <dir>', 'data folder (default: $TRESOR_HOME or ~/.tresor)')
    .option('--vault <dir>', 'use this vault instead of the current one')
    .option('--json', 'machine-readable output')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
  const ctx = createContext(program)
  for (const register of COMMAND_MODULES) register(program, ctx)
  for (const cmd of program.commands) inheritExitOverride(cmd)
  try {
    await program.parseAsync(argv, { from: 'user' })
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (err) {
    return reportFailure(err)
  }
}

function inheritExitOverride(cmd: Command): void {
  cmd.exitOverride()
  for (const sub of cmd.commands) inheritExitOverride(sub)
}

function reportFailure(err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0
    return 2
  }
  if (err instanceof UsageError) {
    process.stderr.write(`tresor: ${err.message}\n`)
    return 2
  }
  if (err instanceof EngineError) {
    process.stderr.write(`tresor: ${err.userMessage}\n`)
    if (process.env.TRESOR_DEBUG) process.stderr.write(`${err.stack ?? ''}\n${String(err.cause ?? '')}\n`)
    return 1
  }
  process.stderr.write(`tresor: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  return 1
}

const isMain = process.argv[1] !== undefined && /[\\/](main\.[jt]s|tresor(\.js)?)$/.test(process.argv[1])
if (isMain || process.env.TRESOR_CLI_MAIN === '1') {
  const code = await runCli(process.argv.slice(2))
  // Let pending stdout drain, then exit (worker pools and timers must not keep the CLI alive).
  process.stdout.write('', () => process.exit(code))
}
