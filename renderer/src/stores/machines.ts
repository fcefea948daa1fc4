import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { api, onAppEvent } from '../api/index.js'
import type { MachineSummary } from '../../../electron/shared/models.js'
import { reportError } from './reportError.js'

export const useMachinesStore = defineStore('machines', () => {
  const machines = ref<MachineSummary[]>([])
  const isLoading = ref(false)

  const protectedBytes = computed(() => machines.value.reduce((sum, m) => sum + m.protectedBytes, 0))

  async function load(): Promise<void> {
    isLoading.value = true
    try {
      machines.value = await api.listMachines()
    } catch (err) {
      reportError(err)
    } finally {
      isLoading.value = false
    }
  }

  async function add(name: string, diskPaths: string[], policyId: string | null): Promise<string | null> {
    try {
      const { machineId } = await api.addMachine({ name, diskPaths, policyId })
      await load()
      return machineId
    } catch (err) {
      reportError(err)
      return null
    }
  }

  async function remove(machineId: string): Promise<void> {
    try {
      await api.removeMachine({ machineId })
      await load()
    } catch (err) {
      reportError(err)
    }
  }

  async function setPolicy(machineId: string, policyId: string | null): Promise<void> {
    try {
      await api.setMachinePolicy({ machineId, policyId })
      await load()
    } catch (err) {
      reportError(err)
    }
  }

  function connect(): () => void {
    return onAppEvent('machinesChanged', () => void load())
  }

  return { machines, isLoading, protectedBytes, load, add, remove, setPolicy, connect }
})
