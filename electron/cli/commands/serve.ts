import type { Command } from 'commander'
import type { CliContext } from '../context.js'

/** `tresor serve [--port n]`: the web host. Filled in by the foundation issue. */
export function registerServeCommand(_program: Command, _ctx: CliContext): void {}
