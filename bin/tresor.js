#!/usr/bin/env node
// The `tresor` command. Runs the compiled CLI from dist/ (built by `npm ci` via the prepare script);
// in a source checkout without a build it falls back to the TypeScript sources through tsx.
import { existsSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { dirname, join } from 'node:path'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const built = join(root, 'dist', 'electron', 'cli', 'main.js')
if (existsSync(built) && !process.env.TRESOR_FROM_SOURCE) {
  await import(pathToFileURL(built).href)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import(pathToFileURL(join(root, 'electron', 'cli', 'main.ts')).href)
}
