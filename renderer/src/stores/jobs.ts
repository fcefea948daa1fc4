import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { api, onAppEvent } from '../api/index.js'
import type { JobProgress, JobSummary } from '../../../electron/shared/models.js'
import { reportError } from './reportError.js'

export const useJobsStore = defineStore('jobs', () => {
  const jobs = ref<JobSummary[]>([])
  const progressById = ref<Record<string, JobProgress>>({})
  const isLoading = ref(false)

  const running = computed(() => jobs.value.filter((j) => j.state === 'running' || j.state === 'queued'))

  async function load(): Promise<void> {
    isLoading.value = true
    try {
      jobs.value = await api.listJobs({ limit: 200 })
    } catch (err) {
      reportError(err)
    } finally {
      isLoading.value = false
    }
  }

  async function backUp(machineId: string): Promise<string | null> {
    try {
      const { jobId } = await api.startBackup({ machineId })
      await load()
      return jobId
    } catch (err) {
      reportError(err)
      return null
    }
  }

  /** Starts a vault verify (readData: decrypt and re-hash every chunk) or a prune job; null when refused. */
  async function startMaintenance(kind: 'verify' | 'prune', readData = false): Promise<string | null> {
    try {
      const { jobId } = kind === 'verify' ? await api.startVerify({ readData }) : await api.startPrune({})
      await load()
      return jobId
    } catch (err) {
      reportError(err)
      return null
    }
  }

  async function cancel(jobId: string): Promise<void> {
    try {
      await api.cancelJob({ jobId })
    } catch (err) {
      reportError(err)
    }
  }

  function connect(): () => void {
    const stops = [
      onAppEvent('jobProgress', (p) => {
        progressById.value[p.jobId] = p
      }),
      onAppEvent('jobFinished', (o) => {
        delete progressById.value[o.jobId]
        void load()
      }),
      onAppEvent('jobsChanged', () => void load()),
    ]
    return () => stops.forEach((stop) => stop())
  }

  return { jobs, progressById, isLoading, running, load, backUp, startMaintenance, cancel, connect }
})
