import { createI18n } from 'vue-i18n'
import { en, type MessageSchema } from './en.js'
import { de } from './de.js'
import type { Language } from '../../../electron/shared/models.js'

export const LOCALES = ['en', 'de'] as const
export type Locale = (typeof LOCALES)[number]

/** Resolves the `system` setting from the browser / OS language. */
export function resolveLocale(language: Language, navigatorLanguage: string | undefined = globalThis.navigator?.language): Locale {
  if (language !== 'system') return language
  return navigatorLanguage?.toLowerCase().startsWith('de') ? 'de' : 'en'
}

export function createAppI18n(locale: Locale = resolveLocale('system')) {
  return createI18n<[MessageSchema], Locale, false>({
    legacy: false,
    locale,
    fallbackLocale: 'en',
    messages: { en, de },
  })
}

export type AppI18n = ReturnType<typeof createAppI18n>
