import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { api, onAppEvent, onConnectionState, type ConnectionState } from '../api/index.js'
import type { AppInfo, Settings, VaultStatus } from '../../../electron/shared/models.js'
import { DEFAULT_SETTINGS } from '../../../electron/shared/models.js'
import { reportError } from './reportError.js'

/** App-wide state: host info, settings, vault status, connection to the host. */
export const useAppStore = defineStore('app', () => {
  const info = ref<AppInfo | null>(null)
  const settings = ref<Settings>({ ...DEFAULT_SETTINGS })
  const vault = ref<VaultStatus | null>(null)
  const connection = ref<ConnectionState>('connecting')
  const isLoaded = ref(false)

  const vaultState = computed(() => vault.value?.state ?? 'none')

  async function load(): Promise<void> {
    try {
      const [i, s, v] = await Promise.all([api.getAppInfo(), api.getSettings(), api.getVaultStatus()])
      info.value = i
      settings.value = s
      vault.value = v
      isLoaded.value = true
    } catch (err) {
      reportError(err)
    }
  }

  async function refreshVault(): Promise<void> {
    try {
      vault.value = await api.getVaultStatus()
    } catch (err) {
      reportError(err)
    }
  }

  async function updateSettings(patch: Partial<Settings>): Promise<boolean> {
    try {
      settings.value = await api.updateSettings(patch)
      return true
    } catch (err) {
      reportError(err)
      return false
    }
  }

  /** Runs a vault action (init/open/unlock/lock); the status it returns replaces ours. */
  async function vaultAction(action: () => Promise<VaultStatus>): Promise<boolean> {
    try {
      vault.value = await action()
      return true
    } catch (err) {
      reportError(err)
      return false
    }
  }

  function connect(): () => void {
    const stops = [
      onConnectionState((s) => {
        const wasDown = connection.value === 'disconnected'
        connection.value = s
        if (s === 'connected' && wasDown) void load()
      }),
      onAppEvent('vaultStatusChanged', (v) => {
        vault.value = v
      }),
      onAppEvent('settingsChanged', (s) => {
        settings.value = s
      }),
    ]
    return () => stops.forEach((stop) => stop())
  }

  return { info, settings, vault, vaultState, connection, isLoaded, load, refreshVault, updateSettings, vaultAction, connect }
})
