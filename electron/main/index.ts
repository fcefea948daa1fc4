/**
 * Electron main: lifecycle, single-instance lock, the hardened window, the tray, IPC handlers that
 * call the app service. Thin: no backup logic lives here.
 *
 * Data folder: `app.getPath('userData')`, or TRESOR_HOME when set (tests, portable use).
 */
import { app, BrowserWindow, dialog, shell } from 'electron'
import { mkdirSync } from 'node:fs'
import { openCatalog, type Db } from '../engine/catalog/index.js'
import { createAppService, type AppService } from '../engine/app/index.js'
import { createEngineWiring } from '../engine/app/engineWiring.js'
import { registerApi, sendEvent, type Disposable } from './ipc/registerApi.js'
import { registerAppScheme, serveRenderer } from './protocol.js'
import { isAllowedExternalUrl, isTrustedSender } from './security.js'
import { createMainWindow, hardenSession } from './window.js'
import { createTray } from './tray.js'
import { preloadPath, rendererDir, resourcePath } from './paths.js'
import { UtilityProcessLauncher } from './utilityLauncher.js'
import { DEFAULT_SETTINGS, type Settings } from '../shared/models.js'

const log = (line: string) => {
  if (process.env.TRESOR_DEBUG) process.stderr.write(`tresor main: ${line}\n`)
}

// Before anything else: one instance per user. A second start focuses the first one's window.
if (!app.requestSingleInstanceLock()) {
  app.quit()
} else {
  registerAppScheme()
  start().catch((err: unknown) => {
    // a catalog that cannot be opened (locked, damaged, a failed migration) or a failed set-up: say
    // so and leave, rather than stay running with no window while holding the single-instance lock
    dialog.showErrorBox('Tresor could not start', err instanceof Error ? err.message : String(err))
    app.exit(1)
  })
}

async function start(): Promise<void> {
  let win: BrowserWindow | undefined
  let quitting = false
  let catalog: Db | undefined
  // Assigned once the app is ready; the emit callback may run before the tray exists.
  const ui: { tray?: ReturnType<typeof createTray> } = {}

  app.on('second-instance', () => showWindow())
  // Any other web contents (there should be none) gets no <webview> and no new windows either.
  app.on('web-contents-created', (_e, wc) => {
    wc.on('will-attach-webview', (event) => event.preventDefault())
    wc.setWindowOpenHandler(() => ({ action: 'deny' }))
  })

  await app.whenReady()
  const home = process.env.TRESOR_HOME ?? app.getPath('userData')
  mkdirSync(home, { recursive: true })
  hardenSession()
  serveRenderer(rendererDir())

  catalog = openCatalog(home)
  let settings: Settings = DEFAULT_SETTINGS
  const emit: Parameters<typeof createAppService>[0]['emit'] = (event, payload) => {
    sendEvent(
      BrowserWindow.getAllWindows().map((w) => w.webContents),
      event,
      payload,
    )
    if (event === 'settingsChanged') {
      // The tray menu and the close handler follow the settings the window changes.
      settings = payload as Settings
      ui.tray?.refresh()
    }
  }
  const wiring = createEngineWiring({ home, catalog, launcher: new UtilityProcessLauncher(), emit })
  const disposeWiring = wiring.dispose
  const service: AppService = createAppService({
    host: {
      kind: 'electron',
      home,
      version: app.getVersion(),
      hasTray: true,
      async openExternal(url) {
        if (!isAllowedExternalUrl(url)) return false
        await shell.openExternal(url)
        return true
      },
      async chooseFiles(purpose) {
        const folder = purpose === 'vaultFolder' || purpose === 'restoreTarget'
        const result = await dialog.showOpenDialog({
          properties: folder ? ['openDirectory', 'createDirectory'] : purpose === 'disks' ? ['openFile', 'multiSelections'] : ['openFile'],
          filters:
            purpose === 'disks'
              ? [{ name: 'Disk images', extensions: ['img', 'raw', 'qcow2', 'vhd', 'vhdx', 'vmdk'] }, { name: 'All files', extensions: ['*'] }]
              : purpose === 'import'
                ? [{ name: 'libvirt / VirtualBox', extensions: ['xml', 'vbox'] }]
                : [],
        })
        return result.canceled ? [] : result.filePaths
      },
    },
    catalog,
    engine: wiring.engine,
    emit,
  })
  const api: Disposable = registerApi(service, (event) => isTrustedSender(event.senderFrame ? { url: event.senderFrame.url, isMainFrame: event.senderFrame === event.sender.mainFrame } : null))

  settings = await service.getSettings({})

  function showWindow(): void {
    if (!win || win.isDestroyed()) {
      win = createMainWindow({
        preload: preloadPath(),
        icon: resourcePath('icon.png'),
        shouldHideOnClose: () => !quitting && settings.keepInTray,
        log,
      })
      win.on('closed', () => (win = undefined))
    }
    if (win.isMinimized()) win.restore()
    win.show()
    win.focus()
  }

  // macOS wants a monochrome template image (it tints it for light and dark menu bars).
  ui.tray = createTray(resourcePath(process.platform === 'darwin' ? 'trayTemplate.png' : 'tray.png'), {
    openWindow: showWindow,
    backUpNow() {
      // Backs up every protected machine; failures show in the window's Jobs view.
      void (async () => {
        for (const m of await service.listMachines({})) {
          await service.startBackup({ machineId: m.id }).catch((err: unknown) => log(`tray backup of ${m.name}: ${String(err)}`))
        }
      })().catch((err: unknown) => log(`tray backup: ${String(err)}`))
    },
    isSchedulesPaused: () => settings.schedulesPaused,
    setSchedulesPaused(paused) {
      service.updateSettings({ schedulesPaused: paused }).catch((err: unknown) => log(`pausing schedules: ${String(err)}`))
    },
    quit() {
      quitting = true
      app.quit()
    },
  })

  showWindow()

  app.on('activate', () => showWindow())
  // With the tray, closing the last window does not quit; without keepInTray it does.
  app.on('window-all-closed', () => {
    if (!settings.keepInTray) {
      quitting = true
      app.quit()
    }
  })
  app.on('before-quit', () => {
    quitting = true
  })
  app.on('will-quit', (event) => {
    if (!catalog) return
    event.preventDefault()
    const db = catalog
    catalog = undefined
    ;(async () => {
      try {
        api.dispose()
        await disposeWiring().catch(() => {})
        service.dispose()
        ui.tray?.dispose()
        db.close()
      } catch (err) {
        log(`shutting down: ${String(err)}`)
      } finally {
        app.exit(0) // the quit was held back above: it must go on whatever failed
      }
    })().catch(() => undefined) // everything above is caught
  })
}
