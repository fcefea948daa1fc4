import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EngineError } from '../../../electron/engine/errors.js'
import { importLibvirt, importVbox } from '../../../electron/engine/backup/importers.js'

let dir = ''
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'tresor-import-')) })
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

const LIBVIRT = `<domain type='kvm'>
  <name>web-server</name>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='cdrom'><source file='/iso/debian.iso'/><target dev='sda' bus='sata'/></disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/data.qcow2'/>
      <target dev='vdb' bus='virtio'/><boot order='2'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='root disk.qcow2'/>
      <target dev='vda' bus='virtio'/><boot order='1'/>
    </disk>
    <disk type='file' device='disk'><source file='/scratch/swap.raw'/><target dev='vdc'/><transient/></disk>
    <disk type='volume' device='disk'><source pool='default' volume='x'/><target dev='vdd'/></disk>
    <disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vde'/></disk>
  </devices>
</domain>`

describe('importLibvirt', () => {
  it('reads name, file disks named by target, the boot-order system disk and transient disks as excluded', async () => {
    const xml = join(dir, 'web.xml')
    await writeFile(xml, LIBVIRT)
    const m = await importLibvirt(xml)
    expect(m.name).toBe('web-server')
    expect(m.source).toBe('libvirt')
    expect(m.sourcePath).toBe(xml)
    expect(m.disks).toEqual([
      { name: 'vdb', path: '/var/lib/libvirt/images/data.qcow2', isExcluded: false, isSystem: false },
      { name: 'vda', path: join(dir, 'root disk.qcow2'), isExcluded: false, isSystem: true },
      { name: 'vdc', path: '/scratch/swap.raw', isExcluded: true, isSystem: false },
    ])
    expect(m.warnings).toHaveLength(2)
    expect(m.warnings.join(' ')).toMatch(/vdd.*volume/)
    expect(m.warnings.join(' ')).toMatch(/vde.*block/)
  })

  it('takes the first disk as system disk when no boot order is given', async () => {
    const xml = join(dir, 'a.xml')
    await writeFile(xml, `<domain><name>a</name><devices><disk type='file' device='disk'><source file='/a.img'/><target dev='hda'/></disk><disk type='file' device='disk'><source file='/b.img'/><target dev='hdb'/></disk></devices></domain>`)
    const m = await importLibvirt(xml)
    expect(m.disks.map((d) => d.isSystem)).toEqual([true, false])
  })

  it('refuses a file that is not a domain or has no disks, with INVALID_INPUT', async () => {
    const a = join(dir, 'x.xml')
    await writeFile(a, '<network><name>n</name></network>')
    await expect(importLibvirt(a)).rejects.toMatchObject({ code: 'INVALID_INPUT' })
    await writeFile(a, '<domain><name>n</name><devices/></domain>')
    await expect(importLibvirt(a)).rejects.toBeInstanceOf(EngineError)
    await expect(importLibvirt(join(dir, 'missing.xml'))).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })
})

const VBOX = `<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{11111111-2222-3333-4444-555555555555}" name="Win Test" OSType="Windows10_64">
    <MediaRegistry>
      <HardDisks>
        <HardDisk uuid="{aaaaaaaa-0000-0000-0000-000000000001}" location="Win Test.vmdk" format="VMDK" type="Normal">
          <HardDisk uuid="{aaaaaaaa-0000-0000-0000-000000000002}" location="Snapshots/{aaaaaaaa-0000-0000-0000-000000000002}.vmdk" format="VMDK"/>
        </HardDisk>
        <HardDisk uuid="{bbbbbbbb-0000-0000-0000-000000000001}" location="/data/extra.vhd" format="VHD" type="Normal"/>
        <HardDisk uuid="{cccccccc-0000-0000-0000-000000000001}" location="old.vdi" format="VDI" type="Normal"/>
      </HardDisks>
      <DVDImages><Image uuid="{dddddddd-0000-0000-0000-000000000001}" location="/iso/win.iso"/></DVDImages>
    </MediaRegistry>
    <Hardware>
      <StorageControllers>
        <StorageController name="IDE" type="PIIX4" PortCount="2" useHostIOCache="true" Bootable="false">
          <AttachedDevice passthrough="false" type="DVD" port="1" device="0"><Image uuid="{dddddddd-0000-0000-0000-000000000001}"/></AttachedDevice>
          <AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{bbbbbbbb-0000-0000-0000-000000000001}"/></AttachedDevice>
        </StorageController>
        <StorageController name="SATA" type="AHCI" PortCount="3" Bootable="true">
          <AttachedDevice type="HardDisk" hotpluggable="false" port="2" device="0"><Image uuid="{cccccccc-0000-0000-0000-000000000001}"/></AttachedDevice>
          <AttachedDevice type="HardDisk" hotpluggable="false" port="0" device="0"><Image uuid="{AAAAAAAA-0000-0000-0000-000000000002}"/></AttachedDevice>
        </StorageController>
      </StorageControllers>
    </Hardware>
  </Machine>
</VirtualBox>`

describe('importVbox', () => {
  it('resolves attached disks through the media registry (differencing child included), in controller/port order', async () => {
    const file = join(dir, 'Win Test.vbox')
    await writeFile(file, VBOX)
    const m = await importVbox(file)
    expect(m.name).toBe('Win Test')
    expect(m.source).toBe('vbox')
    expect(m.disks).toEqual([
      { path: '/data/extra.vhd', isSystem: false },
      { path: join(dir, 'Snapshots/{aaaaaaaa-0000-0000-0000-000000000002}.vmdk'), isSystem: true },
    ])
    expect(m.warnings).toHaveLength(1)
    expect(m.warnings[0]).toMatch(/VDI/)
  })

  it('fails with INVALID_INPUT when no supported disk is attached', async () => {
    const file = join(dir, 'x.vbox')
    await writeFile(file, VBOX.replace(/<StorageControllers>[\s\S]*<\/StorageControllers>/, '<StorageControllers/>'))
    await expect(importVbox(file)).rejects.toMatchObject({ code: 'INVALID_INPUT' })
  })
})
