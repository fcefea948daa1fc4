import { defineStore } from 'pinia'
import { ref } from 'vue'
import { api, onAppEvent } from '../api/index.js'
import type { RestoreQueueItem, RestoreSpec } from '../../../electron/shared/models.js'
import { reportError } from './reportError.js'

export const useRestoreQueueStore = defineStore('restoreQueue', () => {
  const items = ref<RestoreQueueItem[]>([])
  const isLoading = ref(false)

  async function load(): Promise<void> {
    isLoading.value = true
    try {
      items.value = await api.listRestoreQueue()
    } catch (err) {
      reportError(err)
    } finally {
      isLoading.value = false
    }
  }

  async function enqueue(spec: RestoreSpec): Promise<string | null> {
    try {
      const { itemId } = await api.enqueueRestore(spec)
      await load()
      return itemId
    } catch (err) {
      reportError(err)
      return null
    }
  }

  /** Moves an item by `delta` places (-1 = up) and sends the new order. */
  async function move(itemId: string, delta: number): Promise<void> {
    const ids = items.value.map((i) => i.id)
    const from = ids.indexOf(itemId)
    const to = from + delta
    if (from < 0 || to < 0 || to >= ids.length) return
    ids.splice(to, 0, ...ids.splice(from, 1))
    try {
      items.value = await api.reorderRestoreQueue({ itemIds: ids })
    } catch (err) {
      reportError(err)
    }
  }

  async function cancel(itemId: string): Promise<void> {
    try {
      await api.cancelRestore({ itemId })
      await load()
    } catch (err) {
      reportError(err)
    }
  }

  function connect(): () => void {
    return onAppEvent('restoreQueueChanged', (e) => {
      items.value = e.items
    })
  }

  return { items, isLoading, load, enqueue, move, cancel, connect }
})
