#!/usr/bin/env node
// `npm start`: runs the desktop app when Electron's binary is present; otherwise (headless machines,
// or where the binary cannot be downloaded) starts the web host and prints the URL to open.
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)

function electronBinary() {
  try {
    const pkgDir = dirname(require.resolve('electron/package.json'))
    const pathFile = join(pkgDir, 'path.txt')
    if (!existsSync(pathFile)) return undefined
    const exe = join(pkgDir, 'dist', require('node:fs').readFileSync(pathFile, 'utf8').trim())
    return existsSync(exe) ? exe : undefined
  } catch {
    return undefined
  }
}

const exe = electronBinary()
const child = exe
  ? spawn(exe, [root, ...process.argv.slice(2)], { stdio: 'inherit' })
  : (console.error('Electron binary not present: starting the web host instead (open the URL below).'),
    spawn(process.execPath, [join(root, 'bin', 'tresor.js'), 'serve', ...process.argv.slice(2)], { stdio: 'inherit' }))
child.on('exit', (code) => process.exit(code ?? 0))
