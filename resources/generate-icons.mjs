#!/usr/bin/env node
// Draws Tresor's app and tray icons and writes them as PNG files (no image library, no download):
// a rounded green safe with a dial and a handle, anti-aliased by 4x4 supersampling.
//   node resources/generate-icons.mjs        → resources/icon.png (1024), tray.png (22), tray@2x.png (44)
// The files are committed; rerun after changing the drawing.
import { deflateSync } from 'node:zlib'
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  return c >>> 0
})
function crc32(buf) {
  let c = 0xffffffff
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}
function chunk(type, data) {
  const len = Buffer.alloc(4)
  len.writeUInt32BE(data.length)
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data])
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(td))
  return Buffer.concat([len, td, crc])
}
/** RGBA pixels (Uint8Array, width*height*4) → PNG bytes. */
export function encodePng(width, height, rgba) {
  const raw = Buffer.alloc((width * 4 + 1) * height)
  for (let y = 0; y < height; y++) {
    raw[y * (width * 4 + 1)] = 0 // filter: none
    Buffer.from(rgba.buffer, rgba.byteOffset + y * width * 4, width * 4).copy(raw, y * (width * 4 + 1) + 1)
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 6 // colour type RGBA
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 9 })), chunk('IEND', Buffer.alloc(0))])
}

/** Signed-distance helpers in a unit square (0..1). */
function roundedRect(x, y, cx, cy, hw, hh, r) {
  const dx = Math.abs(x - cx) - hw + r
  const dy = Math.abs(y - cy) - hh + r
  return Math.hypot(Math.max(dx, 0), Math.max(dy, 0)) + Math.min(Math.max(dx, dy), 0) - r
}
const circle = (x, y, cx, cy, r) => Math.hypot(x - cx, y - cy) - r

/** The colour at (x, y) in 0..1 or null (transparent). Later layers paint over earlier ones. */
function shade(x, y, mono) {
  const body = mono ? [40, 40, 40] : [47, 111, 79]
  const face = mono ? [40, 40, 40] : [63, 143, 102]
  const light = mono ? [0, 0, 0] : [232, 245, 236]
  let colour = null
  if (roundedRect(x, y, 0.5, 0.5, 0.44, 0.38, 0.1) <= 0) colour = body
  if (!mono && roundedRect(x, y, 0.47, 0.5, 0.34, 0.29, 0.06) <= 0) colour = face
  const ring = Math.abs(circle(x, y, 0.47, 0.5, 0.16))
  if (ring <= 0.035) colour = light
  // dial spokes
  const dx = x - 0.47
  const dy = y - 0.5
  const r = Math.hypot(dx, dy)
  if (r < 0.1 && (Math.abs(dx) < 0.022 || Math.abs(dy) < 0.022)) colour = light
  // handle
  if (roundedRect(x, y, 0.86, 0.5, 0.03, 0.1, 0.02) <= 0) colour = light
  if (mono && colour === light) colour = null // tray: the light parts are cut out of the silhouette
  return colour
}

function render(size, mono) {
  const rgba = new Uint8Array(size * size * 4)
  const S = 4
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      let r = 0, g = 0, b = 0, a = 0
      for (let sy = 0; sy < S; sy++) {
        for (let sx = 0; sx < S; sx++) {
          const c = shade((px + (sx + 0.5) / S) / size, (py + (sy + 0.5) / S) / size, mono)
          if (!c) continue
          r += c[0]
          g += c[1]
          b += c[2]
          a++
        }
      }
      const i = (py * size + px) * 4
      if (a > 0) {
        rgba[i] = Math.round(r / a)
        rgba[i + 1] = Math.round(g / a)
        rgba[i + 2] = Math.round(b / a)
        rgba[i + 3] = Math.round((255 * a) / (S * S))
      }
    }
  }
  return encodePng(size, size, rgba)
}

const here = dirname(fileURLToPath(import.meta.url))
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(join(here, 'icon.png'), render(1024, false))
  writeFileSync(join(here, 'tray.png'), render(22, false))
  writeFileSync(join(here, 'tray@2x.png'), render(44, false))
  writeFileSync(join(here, 'trayTemplate.png'), render(22, true))
  writeFileSync(join(here, 'trayTemplate@2x.png'), render(44, true))
  console.log('wrote icon.png, tray.png, tray@2x.png, trayTemplate.png, trayTemplate@2x.png')
}
