import { defineStore } from 'pinia'
import { ref } from 'vue'
import { api, onAppEvent } from '../api/index.js'
import type { PointSummary } from '../../../electron/shared/models.js'
import { reportError } from './reportError.js'

export const usePointsStore = defineStore('points', () => {
  const points = ref<PointSummary[]>([])
  const machineFilter = ref<string | null>(null)
  const isLoading = ref(false)

  async function load(): Promise<void> {
    isLoading.value = true
    try {
      points.value = await api.listPoints({ machineId: machineFilter.value })
    } catch (err) {
      reportError(err)
    } finally {
      isLoading.value = false
    }
  }

  async function filterBy(machineId: string | null): Promise<void> {
    machineFilter.value = machineId
    await load()
  }

  function connect(): () => void {
    // A finished backup (or prune) changes the list of points.
    return onAppEvent('jobFinished', (o) => {
      if (o.kind === 'backup' || o.kind === 'prune' || o.kind === 'rebuild') void load()
    })
  }

  return { points, machineFilter, isLoading, load, filterBy, connect }
})
