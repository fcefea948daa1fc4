/**
 * Proves each import-boundary rule of eslint.config.js fires (and does not fire where the import is
 * allowed), by linting small snippets under the file paths they would have in the repository; and
 * that the type-aware rule against unobserved promises fires on a real file of the project.
 */
import { beforeAll, describe, expect, it } from 'vitest'
import { ESLint } from 'eslint'
import { rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
let eslint: ESLint

beforeAll(() => {
  // the snippets' paths are not files of the TypeScript project: lint them without type information
  eslint = new ESLint({
    cwd: ROOT,
    overrideConfig: {
      files: ['electron/**/*.ts'],
      languageOptions: { parserOptions: { projectService: false } },
      rules: { '@typescript-eslint/no-floating-promises': 'off' },
    },
  })
})

async function restricted(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: join(ROOT, file) })
  if (!result) throw new Error('no lint result')
  const fatal = result.messages.filter((m) => m.fatal)
  if (fatal.length) throw new Error(`parse error in the snippet for ${file}: ${fatal[0]!.message}`)
  return result.messages.filter((m) => m.ruleId === 'no-restricted-imports' && m.severity === 2).map((m) => m.message)
}

const cases: { rule: string; file: string; code: string }[] = [
  // electron is forbidden in the engine and in shared
  { rule: 'electron in engine', file: 'electron/engine/backup/x.ts', code: "import { app } from 'electron'\nvoid app\n" },
  { rule: 'electron type in engine', file: 'electron/engine/vault/x.ts', code: "import type { App } from 'electron'\nexport type A = App\n" },
  { rule: 'electron re-export in engine', file: 'electron/engine/x.ts', code: "export { app } from 'electron'\n" },
  { rule: 'electron subpath in engine', file: 'electron/engine/x.ts', code: "import { ipcMain } from 'electron/main'\nvoid ipcMain\n" },
  { rule: 'electron in shared', file: 'electron/shared/x.ts', code: "import { ipcRenderer } from 'electron'\nvoid ipcRenderer\n" },
  // Node built-ins are forbidden in the renderer (and in shared and preload)
  { rule: 'node:fs in renderer', file: 'renderer/src/x.ts', code: "import { readFileSync } from 'node:fs'\nvoid readFileSync\n" },
  { rule: 'bare fs in renderer', file: 'renderer/src/x.ts', code: "import fs from 'fs'\nvoid fs\n" },
  { rule: 'path in renderer', file: 'renderer/src/stores/x.ts', code: "import { join } from 'path'\nvoid join\n" },
  { rule: 'child_process in renderer', file: 'renderer/src/x.ts', code: "import { exec } from 'child_process'\nvoid exec\n" },
  { rule: 'fs/promises in renderer', file: 'renderer/src/x.ts', code: "import { readFile } from 'fs/promises'\nvoid readFile\n" },
  {
    rule: 'node:path in a Vue component',
    file: 'renderer/src/components/X.vue',
    code: '<script setup lang="ts">\nimport { join } from \'node:path\'\nconst p = join(\'a\', \'b\')\n</script>\n<template><div>{{ p }}</div></template>\n',
  },
  { rule: 'electron in renderer', file: 'renderer/src/x.ts', code: "import { ipcRenderer } from 'electron'\nvoid ipcRenderer\n" },
  { rule: 'engine from renderer', file: 'renderer/src/x.ts', code: "import { openCatalog } from '../../electron/engine/catalog/index.js'\nvoid openCatalog\n" },
  { rule: 'node:fs in shared', file: 'electron/shared/x.ts', code: "import { readFileSync } from 'node:fs'\nvoid readFileSync\n" },
  { rule: 'os in preload', file: 'electron/preload/x.ts', code: "import { homedir } from 'os'\nvoid homedir\n" },
  // keytar only in engine/keys
  { rule: 'keytar in vault', file: 'electron/engine/vault/x.ts', code: "import keytar from 'keytar'\nvoid keytar\n" },
  { rule: 'keytar in main', file: 'electron/main/x.ts', code: "import keytar from 'keytar'\nvoid keytar\n" },
  { rule: 'keytar in cli', file: 'electron/cli/x.ts', code: "import keytar from 'keytar'\nvoid keytar\n" },
  // the engine does not import its hosts
  { rule: 'main from engine', file: 'electron/engine/app/x.ts', code: "import { registerApi } from '../../main/ipc/registerApi.js'\nvoid registerApi\n" },
  { rule: 'server from engine', file: 'electron/engine/x.ts', code: "import { startWebHost } from '../server/webHost.js'\nvoid startWebHost\n" },
]

const allowed: { what: string; file: string; code: string }[] = [
  { what: 'electron in main', file: 'electron/main/x.ts', code: "import { app } from 'electron'\nvoid app\n" },
  { what: 'electron in preload', file: 'electron/preload/x.ts', code: "import { contextBridge } from 'electron'\nvoid contextBridge\n" },
  { what: 'Node built-ins in the engine', file: 'electron/engine/vault/x.ts', code: "import { readFile } from 'node:fs/promises'\nvoid readFile\n" },
  { what: 'keytar in engine/keys', file: 'electron/engine/keys/x.ts', code: "import keytar from 'keytar'\nvoid keytar\n" },
  { what: 'shared from the renderer', file: 'renderer/src/x.ts', code: "import { API } from '../../electron/shared/ipc.js'\nvoid API\n" },
  { what: 'zod in shared', file: 'electron/shared/x.ts', code: "import { z } from 'zod'\nvoid z\n" },
  { what: 'engine from the web host', file: 'electron/server/x.ts', code: "import { openCatalog } from '../engine/catalog/index.js'\nimport { createServer } from 'node:http'\nvoid openCatalog\nvoid createServer\n" },
  { what: 'engine within the engine', file: 'electron/engine/app/x.ts', code: "import { openCatalog } from '../catalog/index.js'\nvoid openCatalog\n" },
]

describe('import boundaries (eslint.config.js)', () => {
  it.each(cases)('fires: $rule', async ({ file, code }) => {
    const messages = await restricted(file, code)
    expect(messages.length).toBeGreaterThan(0)
  })

  it.each(allowed)('allows: $what', async ({ file, code }) => {
    expect(await restricted(file, code)).toEqual([])
  })

  it('explains why in the message', async () => {
    const [message] = await restricted('electron/engine/x.ts', "import { app } from 'electron'\nvoid app\n")
    expect(message).toContain('never import Electron')
  })
})

describe('unobserved promises (eslint.config.js, type-aware)', () => {
  it('refuses a promise dropped, or only voided, in the processes\' code; accepts one that is caught', async () => {
    const file = join(ROOT, 'electron', 'engine', `lint-probe-${process.pid}.ts`)
    const code = [
      'async function work(): Promise<number> {',
      '  return 1',
      '}',
      'const results: Array<Promise<number>> = []',
      'work()',
      'void work()',
      'results.push(work())',
      'work().catch(() => undefined)',
      'export { results }',
      '',
    ].join('\n')
    await writeFile(file, code)
    try {
      const [result] = await new ESLint({ cwd: ROOT }).lintFiles([file])
      const lines = result!.messages.filter((m) => m.ruleId === '@typescript-eslint/no-floating-promises').map((m) => m.line)
      expect(result!.messages.filter((m) => m.fatal)).toEqual([])
      // the dropped call and the voided one; pushing into an array is observing it later (see recordReader.ts for that case)
      expect(lines).toEqual([5, 6])
    } finally {
      await rm(file, { force: true })
    }
  }, 60_000)
})
