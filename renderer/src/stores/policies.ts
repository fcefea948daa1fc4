import { defineStore } from 'pinia'
import { ref } from 'vue'
import { api, onAppEvent } from '../api/index.js'
import type { PolicySpec, PolicySummary } from '../../../electron/shared/models.js'
import { reportError } from './reportError.js'

export const usePoliciesStore = defineStore('policies', () => {
  const policies = ref<PolicySummary[]>([])
  const isLoading = ref(false)

  async function load(): Promise<void> {
    isLoading.value = true
    try {
      policies.value = await api.listPolicies()
    } catch (err) {
      reportError(err)
    } finally {
      isLoading.value = false
    }
  }

  async function save(id: string | null, name: string, spec: PolicySpec): Promise<PolicySummary | null> {
    try {
      const saved = await api.savePolicy({ id, name, spec })
      await load()
      return saved
    } catch (err) {
      reportError(err)
      return null
    }
  }

  async function remove(policyId: string): Promise<void> {
    try {
      await api.deletePolicy({ policyId })
      await load()
    } catch (err) {
      reportError(err)
    }
  }

  function connect(): () => void {
    return onAppEvent('policiesChanged', () => void load())
  }

  return { policies, isLoading, load, save, remove, connect }
})
