import { defineConfig } from 'vite'
import { fileURLToPath } from 'node:url'

// The preload: electron/preload/index.ts (+ the shared contract it imports) bundled into ONE
// CommonJS file, dist/electron/preload/index.cjs. Sandboxed preloads can require only 'electron'
// (and a few polyfilled modules), never ESM or other files, hence the single-file CJS bundle.
export default defineConfig({
  build: {
    outDir: fileURLToPath(new URL('./dist/electron/preload', import.meta.url)),
    emptyOutDir: true,
    target: 'chrome130',
    minify: false,
    sourcemap: false,
    lib: {
      entry: fileURLToPath(new URL('./electron/preload/index.ts', import.meta.url)),
      formats: ['cjs'],
      fileName: () => 'index.cjs',
    },
    rollupOptions: {
      external: ['electron'],
      output: { inlineDynamicImports: true },
      onwarn(warning, warn) {
        if (warning.code === 'INVALID_ANNOTATION' && warning.id?.includes('node_modules')) return
        warn(warning)
      },
    },
  },
})
