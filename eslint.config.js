// ESLint (flat config): typescript-eslint + eslint-plugin-vue, and the import boundaries of
// STYLE.md enforced per area with no-restricted-imports:
//   electron/engine, electron/shared  never import 'electron'
//   electron/shared, electron/preload, renderer  never import Node built-ins (node:* or bare fs, path…)
//   renderer  imports only electron/shared from the electron/ tree
//   electron/engine  never imports main, server, cli or preload
//   keytar  only in electron/engine/keys
// test/unit/lint.test.ts proves each rule fires.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'
import pluginVue from 'eslint-plugin-vue'
import globals from 'globals'
import { builtinModules } from 'node:module'

const ELECTRON = [
  { name: 'electron', message: 'electron/engine and electron/shared never import Electron: the engine runs in plain Node (CLI, web host, job processes).' },
]
const ELECTRON_PATTERNS = [{ group: ['electron/*'], message: 'electron/engine and electron/shared never import Electron.' }]
const KEYTAR = [{ name: 'keytar', message: 'keytar is used only in electron/engine/keys (the keychain adapter).' }]
const NODE_BUILTINS = builtinModules
  .filter((m) => !m.startsWith('_'))
  .map((name) => ({ name, message: `Node built-in "${name}" is not available here (no Node access in this runtime).` }))
const NODE_PATTERNS = [{ group: ['node:*'], message: 'Node built-ins (node:*) are not available here (no Node access in this runtime).' }]
const NOT_FROM_RENDERER = [
  {
    group: ['**/electron/engine/**', '**/electron/main/**', '**/electron/server/**', '**/electron/cli/**', '**/electron/preload/**'],
    message: 'The renderer imports only electron/shared (the contract, types, schemas); everything else runs on the other side of the IPC boundary.',
  },
]
const NOT_FROM_ENGINE = [
  {
    group: ['**/main/**', '**/server/**', '**/cli/**', '**/preload/**', '!**/engine/**'],
    message: 'The engine knows nothing of its hosts (main, web host, CLI, preload): dependencies point from them to the engine.',
  },
]

/** One no-restricted-imports setting (a later config object replaces an earlier one, so each area lists all it needs). */
function restrict(paths, patterns = []) {
  return { 'no-restricted-imports': ['error', { paths, patterns }] }
}

export default tseslint.config(
  {
    ignores: ['dist/**', 'out/**', 'release/**', 'node_modules/**', 'test-results/**', 'coverage/**', '**/*.d.ts', 'test/fixtures/**', 'native/*/build/**'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  ...pluginVue.configs['flat/recommended'],
  {
    files: ['**/*.vue'],
    languageOptions: { parserOptions: { parser: tseslint.parser, extraFileExtensions: ['.vue'], sourceType: 'module' } },
  },
  {
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      'no-control-regex': 'off', // NUL and control characters are matched on purpose (input validation)
      'no-empty': ['error', { allowEmptyCatch: true }],
      ...restrict(KEYTAR),
    },
  },
  {
    // CommonJS entry points of native addons (native/*/index.cjs): `require` is how they load their binary
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // A promise nobody observes turns its failure into an unhandled rejection: a crash in the CLI
    // and job processes, a warning and a half-done state in Electron. Type-aware, so only for the
    // processes' code (the renderer's calls go through its store, which catches).
    files: ['electron/**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: { '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: false }] },
  },
  {
    files: ['renderer/**/*.{ts,vue}'],
    languageOptions: { globals: { ...globals.browser } },
    rules: {
      ...restrict([...ELECTRON, ...KEYTAR, ...NODE_BUILTINS], [...ELECTRON_PATTERNS, ...NODE_PATTERNS, ...NOT_FROM_RENDERER]),
      // Prettier-like formatting is not this linter's job; the Vue rules that remain are about correctness.
      'vue/max-attributes-per-line': 'off',
      'vue/singleline-html-element-content-newline': 'off',
      'vue/html-self-closing': 'off',
      'vue/html-closing-bracket-newline': 'off',
      'vue/html-indent': 'off',
      'vue/multiline-html-element-content-newline': 'off',
      'vue/attributes-order': 'off',
    },
  },
  {
    files: ['electron/shared/**/*.ts'],
    rules: restrict([...ELECTRON, ...KEYTAR, ...NODE_BUILTINS], [...ELECTRON_PATTERNS, ...NODE_PATTERNS]),
  },
  {
    files: ['electron/preload/**/*.ts'],
    rules: restrict([...KEYTAR, ...NODE_BUILTINS], NODE_PATTERNS),
  },
  {
    files: ['electron/engine/**/*.ts'],
    rules: restrict([...ELECTRON, ...KEYTAR], [...ELECTRON_PATTERNS, ...NOT_FROM_ENGINE]),
  },
  {
    files: ['electron/engine/keys/**/*.ts'],
    rules: restrict(ELECTRON, [...ELECTRON_PATTERNS, ...NOT_FROM_ENGINE]),
  },
  {
    // Tests and scripts may use what they test; keytar only through engine/keys or in keychain tests.
    files: ['test/**/*.ts', 'scripts/**/*.{js,mjs,ts}', '*.config.{js,ts,mjs}'],
    rules: {
      'no-restricted-imports': 'off',
      // Test doubles poke at internals on purpose.
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-this-alias': 'off',
    },
  },
  {
    // The CLI's entry is CommonJS (bin/package.json): only there can it size libuv's thread pool.
    files: ['bin/*.js'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
)
