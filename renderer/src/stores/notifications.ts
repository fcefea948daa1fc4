import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { ErrorCode } from '../../../electron/shared/errors.js'

export interface Notice {
  id: number
  kind: 'error' | 'success' | 'info'
  message: string
  code: ErrorCode | null
}

export const useNotificationsStore = defineStore('notifications', () => {
  const notices = ref<Notice[]>([])
  let nextId = 1

  function push(kind: Notice['kind'], message: string, code: ErrorCode | null = null): number {
    const id = nextId++
    notices.value.push({ id, kind, message, code })
    // Bounded: the oldest notices go first.
    if (notices.value.length > 20) notices.value.splice(0, notices.value.length - 20)
    return id
  }

  function dismiss(id: number): void {
    notices.value = notices.value.filter((n) => n.id !== id)
  }

  function clear(): void {
    notices.value = []
  }

  return { notices, push, dismiss, clear }
})
