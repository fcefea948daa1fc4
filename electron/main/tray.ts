import { Menu, Tray, nativeImage } from 'electron'

export interface TrayActions {
  openWindow(): void
  backUpNow(): void
  setSchedulesPaused(paused: boolean): void
  isSchedulesPaused(): boolean
  quit(): void
}

/** The tray icon and its menu: Open Tresor, Back up now, Pause schedules, Quit. Returns its disposer. */
export function createTray(iconPath: string, actions: TrayActions): { refresh(): void; dispose(): void } {
  const tray = new Tray(nativeImage.createFromPath(iconPath))
  tray.setToolTip('Tresor')
  const build = () =>
    Menu.buildFromTemplate([
      { label: 'Open Tresor', click: () => actions.openWindow() },
      { label: 'Back up now', click: () => actions.backUpNow() },
      { type: 'separator' },
      { label: 'Pause schedules', type: 'checkbox', checked: actions.isSchedulesPaused(), click: (item) => actions.setSchedulesPaused(item.checked) },
      { type: 'separator' },
      { label: 'Quit', click: () => actions.quit() },
    ])
  tray.setContextMenu(build())
  tray.on('click', () => actions.openWindow())
  return {
    refresh: () => tray.setContextMenu(build()),
    dispose: () => tray.destroy(),
  }
}
