/**
 * build/electron-builder.yml cannot be run here (no Electron binary), so it is kept correct by
 * electron-builder's own schema validation plus checks of what the issue requires: Linux AppImage +
 * deb, Windows NSIS, macOS dmg, native modules unpacked and rebuilt for Electron, icons present.
 */
import { describe, expect, it } from 'vitest'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const CONFIG = join(ROOT, 'build', 'electron-builder.yml')
const require = createRequire(import.meta.url)
// electron-builder's own YAML parser (a dependency of electron-builder; no typings shipped).
const yaml = require('js-yaml') as { load(text: string): unknown }

interface BuilderConfig {
  appId: string
  files: string[]
  asar: boolean
  asarUnpack: string[]
  npmRebuild: boolean
  extraResources: { from: string; to: string }[]
  linux: { target: string[]; icon: string; maintainer: string }
  win: { target: string[]; icon: string }
  mac: { target: string[]; icon: string }
}
const config = yaml.load(readFileSync(CONFIG, 'utf8')) as BuilderConfig

function pngSize(file: string): { width: number; height: number } {
  const b = readFileSync(file)
  expect(b.subarray(0, 8)).toEqual(Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]))
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) }
}

describe('electron-builder configuration', () => {
  it("passes electron-builder's own schema validation", async () => {
    const { getConfig, validateConfiguration } = require('app-builder-lib/out/util/config/config') as {
      getConfig(projectDir: string, configPath: string | null, fromOptions: unknown): Promise<unknown>
      validateConfiguration(config: unknown, logger: unknown): Promise<void>
    }
    const { DebugLogger } = require('builder-util') as { DebugLogger: new (enabled: boolean) => unknown }
    const loaded = await getConfig(ROOT, CONFIG, null)
    await expect(validateConfiguration(loaded, new DebugLogger(false))).resolves.toBeUndefined()
  })

  it('the validation does reject a broken configuration (the check is live)', async () => {
    const { validateConfiguration } = require('app-builder-lib/out/util/config/config') as { validateConfiguration(config: unknown, logger: unknown): Promise<void> }
    const { DebugLogger } = require('builder-util') as { DebugLogger: new (enabled: boolean) => unknown }
    await expect(validateConfiguration({ ...config, asar: 'yes please', linux: { target: 42 } }, new DebugLogger(false))).rejects.toThrow()
  })

  it('targets Linux AppImage + deb, Windows NSIS and macOS dmg', () => {
    expect(config.linux.target).toEqual(expect.arrayContaining(['AppImage', 'deb']))
    expect(config.linux.maintainer).toMatch(/<.+@.+>/) // deb needs a maintainer e-mail
    expect(config.win.target).toEqual(['nsis'])
    expect(config.mac.target).toEqual(['dmg'])
  })

  it('unpacks the native modules from the asar and rebuilds them for Electron when packaging', () => {
    expect(config.asar).toBe(true)
    for (const mod of ['better-sqlite3', 'keytar', 'tresor-memory', 'tresor-digest']) expect(config.asarUnpack.some((p) => p.includes(mod)), mod).toBe(true)
    expect(config.asarUnpack).toContain('**/*.node')
    expect(config.npmRebuild).toBe(true)
  })

  it('packages what the build produces and what main loads', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { main: string }
    expect(pkg.main).toBe('dist/electron/main/index.js')
    expect(config.files).toEqual(expect.arrayContaining(['package.json', 'dist/electron/**/*', 'dist/renderer/**/*']))
    expect(config.extraResources).toEqual([expect.objectContaining({ from: 'resources', to: 'resources' })])
    // The preload must be the CommonJS bundle (sandboxed preloads cannot be ESM).
    expect(readFileSync(join(ROOT, 'electron', 'main', 'paths.ts'), 'utf8')).toContain("'preload', 'index.cjs'")
    expect(readFileSync(join(ROOT, 'vite.preload.config.ts'), 'utf8')).toContain("formats: ['cjs']")
  })

  it('has the app and tray icons in the sizes the platforms need', () => {
    for (const icon of new Set([config.linux.icon, config.win.icon, config.mac.icon])) {
      const file = join(ROOT, icon)
      expect(existsSync(file), icon).toBe(true)
      const { width, height } = pngSize(file)
      expect(width).toBe(height)
      expect(width).toBeGreaterThanOrEqual(512) // macOS icns needs 512+, Windows ico 256
    }
    expect(pngSize(join(ROOT, 'resources', 'tray.png'))).toEqual({ width: 22, height: 22 })
    expect(pngSize(join(ROOT, 'resources', 'tray@2x.png'))).toEqual({ width: 44, height: 44 })
    expect(pngSize(join(ROOT, 'resources', 'trayTemplate.png'))).toEqual({ width: 22, height: 22 })
  })
})
