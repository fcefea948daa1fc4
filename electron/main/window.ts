import { BrowserWindow, session, shell, type Session, type WebContents } from 'electron'
import { APP_START_URL, SECURE_WEB_PREFERENCES, isAllowedExternalUrl, isSameAppPage } from './security.js'

/**
 * Denies everything a page could ask the session for: camera, microphone, notifications,
 * geolocation, clipboard, HID/serial/USB devices… Tresor's page needs none of them.
 */
export function hardenSession(ses: Session = session.defaultSession): void {
  ses.setPermissionRequestHandler((_wc, _permission, callback) => callback(false))
  ses.setPermissionCheckHandler(() => false)
  ses.setDevicePermissionHandler(() => false)
  // Downloads are never started by our page.
  ses.on('will-download', (event) => event.preventDefault())
}

/** Navigation, new windows, <webview> and redirects are refused; allow-listed https links open in the browser. */
export function hardenWebContents(wc: WebContents, log: (line: string) => void = () => {}): void {
  wc.setWindowOpenHandler(({ url }) => {
    if (isAllowedExternalUrl(url)) shell.openExternal(url).catch((err: unknown) => log(`could not open ${url.slice(0, 200)}: ${String(err)}`))
    else log(`refused window.open(${JSON.stringify(url.slice(0, 200))})`)
    return { action: 'deny' }
  })
  wc.on('will-navigate', (event, url) => {
    if (isSameAppPage(url)) return
    event.preventDefault()
    log(`refused navigation to ${JSON.stringify(url.slice(0, 200))}`)
  })
  wc.on('will-redirect', (event, url) => {
    if (isSameAppPage(url)) return
    event.preventDefault()
  })
  wc.on('will-frame-navigate', (event) => {
    // Sub-frames (there should be none: frame-src 'none') never navigate anywhere.
    if (!event.isMainFrame) event.preventDefault()
  })
  wc.on('will-attach-webview', (event) => event.preventDefault())
}

export interface MainWindowOptions {
  preload: string
  icon: string
  /** Return true to hide instead of closing (keep running in the tray). */
  shouldHideOnClose: () => boolean
  log?: (line: string) => void
}

export function createMainWindow(options: MainWindowOptions): BrowserWindow {
  const win = new BrowserWindow({
    width: 1280,
    height: 820,
    minWidth: 900,
    minHeight: 600,
    show: false,
    title: 'Tresor',
    icon: options.icon,
    autoHideMenuBar: true,
    webPreferences: { ...SECURE_WEB_PREFERENCES, preload: options.preload },
  })
  hardenWebContents(win.webContents, options.log)
  win.on('close', (event) => {
    if (options.shouldHideOnClose()) {
      event.preventDefault()
      win.hide()
    }
  })
  win.once('ready-to-show', () => win.show())
  // a load aborted by a close or reload rejects; the window reports its own load failures
  win.loadURL(APP_START_URL).catch(() => undefined)
  return win
}
