import { createRouter, createWebHashHistory, type RouteRecordRaw } from 'vue-router'
import DashboardView from '../views/DashboardView.vue'
import MachinesView from '../views/MachinesView.vue'
import PointsView from '../views/PointsView.vue'
import JobsView from '../views/JobsView.vue'
import RestoreQueueView from '../views/RestoreQueueView.vue'
import PoliciesView from '../views/PoliciesView.vue'
import VaultView from '../views/VaultView.vue'
import SettingsView from '../views/SettingsView.vue'

/** Every view, in sidebar order. `titleKey` is the i18n key of its name. */
export const VIEWS = [
  { path: '/', name: 'dashboard', component: DashboardView, titleKey: 'nav.dashboard' },
  { path: '/machines', name: 'machines', component: MachinesView, titleKey: 'nav.machines' },
  { path: '/points', name: 'points', component: PointsView, titleKey: 'nav.points' },
  { path: '/jobs', name: 'jobs', component: JobsView, titleKey: 'nav.jobs' },
  { path: '/restore-queue', name: 'restoreQueue', component: RestoreQueueView, titleKey: 'nav.restoreQueue' },
  { path: '/policies', name: 'policies', component: PoliciesView, titleKey: 'nav.policies' },
  { path: '/vault', name: 'vault', component: VaultView, titleKey: 'nav.vault' },
  { path: '/settings', name: 'settings', component: SettingsView, titleKey: 'nav.settings' },
] as const

export type ViewName = (typeof VIEWS)[number]['name']

export function createAppRouter() {
  const routes: RouteRecordRaw[] = [
    ...VIEWS.map((v) => ({ path: v.path, name: v.name, component: v.component, meta: { titleKey: v.titleKey } })),
    { path: '/:pathMatch(.*)*', redirect: '/' },
  ]
  // Hash history: works from the app:// protocol in Electron and needs no server fallback in the web host.
  return createRouter({ history: createWebHashHistory(), routes })
}
