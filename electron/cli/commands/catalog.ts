import type { Command } from 'commander'
import type { CliContext } from '../context.js'

/** Commands of this area (see DESIGN.md's CLI contract). Filled in by the area's issue. */
export function registerCatalogCommands(_program: Command, _ctx: CliContext): void {}
