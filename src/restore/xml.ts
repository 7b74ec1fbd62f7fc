/**
 * Rewriting a domain XML for restore (pure: no libvirt needed): a new name
 * and UUID for a copy, new MAC addresses, disks pointed at the LVs they are
 * restored into, disks left out, a fresh NVRAM. Everything else is kept as
 * libvirt wrote it.
 */
import { randomBytes } from 'node:crypto';
import { XMLSerializer, type Document, type Element } from '@xmldom/xmldom';
import { KvmbakError } from '../errors.js';
import { childElements, firstChild, parseXml } from '../util/xml.js';

export interface DomainXmlRewrite {
  /** New <name>. */
  name?: string;
  /** New <uuid> (also written into <sysinfo> system uuid entries; <genid> is emptied so libvirt makes a new one). */
  uuid?: string;
  /** Gives every <interface> a new <mac address>. */
  newMac?: () => string;
  /** Disk target → block device: the disk becomes `<disk type='block'>` with `<source dev=PATH>`. */
  diskPaths?: Readonly<Record<string, string>>;
  /** Disk targets to remove from the XML. */
  removeDisks?: readonly string[];
  /** Empty <os><nvram> so libvirt gives the domain a fresh UEFI variable store instead of sharing the original's. */
  freshNvram?: boolean;
}

export interface RewrittenDomainXml {
  xml: string;
  /** MAC addresses replaced (old → new), in document order. */
  macs: { from: string | null; to: string }[];
}

/** The XML is not a usable libvirt domain description. */
function xmlError(message: string, cause?: unknown): KvmbakError {
  return new KvmbakError(message, 'KVMBAK_RESTORE_XML', cause === undefined ? {} : { cause });
}

function parse(xml: string): Document {
  let doc: Document;
  try {
    doc = parseXml(xml);
  } catch (e) {
    throw xmlError(`the domain XML is not well-formed: ${(e as Error).message}`, e);
  }
  const root = doc.documentElement;
  if (root === null || root.tagName !== 'domain') {
    throw xmlError(`the domain XML's root element is <${root?.tagName ?? ''}>, not <domain>`);
  }
  return doc;
}

function setText(doc: Document, el: Element, text: string): void {
  while (el.firstChild) el.removeChild(el.firstChild);
  el.appendChild(doc.createTextNode(text));
}

/** A random locally administered MAC in QEMU's 52:54:00 range, as virt-clone and libvirt make them. */
export function randomMac(): string {
  const b = randomBytes(3);
  return `52:54:00:${[...b].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
}

/** The name and UUID a domain XML declares. */
export function domainXmlIdentity(xml: string): { name: string; uuid: string | null } {
  const root = parse(xml).documentElement!;
  const name = firstChild(root, 'name')?.textContent?.trim() ?? '';
  if (name === '') throw xmlError('the domain XML has no <name>');
  const uuid = firstChild(root, 'uuid')?.textContent?.trim() || null;
  return { name, uuid };
}

/** Disk targets the XML has, in document order. */
function diskElements(root: Element): Map<string, Element> {
  const devices = firstChild(root, 'devices');
  const out = new Map<string, Element>();
  if (devices === undefined) return out;
  for (const disk of childElements(devices, 'disk')) {
    const dev = firstChild(disk, 'target')?.getAttribute('dev');
    if (dev) out.set(dev, disk);
  }
  return out;
}

/** Attributes of <source> that name where the data is, for any disk type. */
const SOURCE_LOCATION_ATTRS = ['file', 'dev', 'dir', 'pool', 'volume', 'mode', 'protocol', 'name', 'index'];

function pointDiskAt(doc: Document, disk: Element, path: string): void {
  disk.setAttribute('type', 'block');
  let source = firstChild(disk, 'source');
  if (source === undefined) {
    source = doc.createElement('source');
    const target = firstChild(disk, 'target');
    disk.insertBefore(source, target ?? null);
  }
  for (const a of SOURCE_LOCATION_ATTRS) source.removeAttribute(a);
  // a network disk's <host> children have no meaning for a block device
  for (const h of childElements(source, 'host')) source.removeChild(h);
  source.setAttribute('dev', path);
}

/**
 * Applies `rw` to a domain XML and returns the new text. Throws
 * KvmbakError KVMBAK_RESTORE_XML when the XML is not a domain, or names a
 * disk target it does not have.
 */
export function rewriteDomainXml(xml: string, rw: DomainXmlRewrite): RewrittenDomainXml {
  const doc = parse(xml);
  const root = doc.documentElement!;
  const macs: RewrittenDomainXml['macs'] = [];

  if (rw.name !== undefined) {
    const el = firstChild(root, 'name');
    if (el === undefined) throw xmlError('the domain XML has no <name>');
    setText(doc, el, rw.name);
    // <title> is free text and may well mention the old name: left alone
  }
  if (rw.uuid !== undefined) {
    let el = firstChild(root, 'uuid');
    if (el === undefined) {
      el = doc.createElement('uuid');
      const name = firstChild(root, 'name');
      root.insertBefore(el, name?.nextSibling ?? root.firstChild);
    }
    setText(doc, el, rw.uuid);
    // libvirt refuses an SMBIOS system uuid that differs from <uuid>
    for (const sysinfo of childElements(root, 'sysinfo')) {
      for (const system of childElements(sysinfo, 'system')) {
        for (const entry of childElements(system, 'entry')) {
          if (entry.getAttribute('name') === 'uuid') setText(doc, entry, rw.uuid);
        }
      }
    }
    // an empty <genid/> makes libvirt generate a new VM generation id
    for (const genid of childElements(root, 'genid')) while (genid.firstChild) genid.removeChild(genid.firstChild);
  }

  const disks = diskElements(root);
  for (const target of Object.keys(rw.diskPaths ?? {})) {
    if (!disks.has(target)) {
      throw xmlError(`the domain XML has no disk ${target} (its disks: ${[...disks.keys()].join(', ') || 'none'})`);
    }
  }
  for (const [target, path] of Object.entries(rw.diskPaths ?? {})) pointDiskAt(doc, disks.get(target)!, path);
  for (const target of rw.removeDisks ?? []) {
    const disk = disks.get(target);
    if (disk === undefined) throw xmlError(`the domain XML has no disk ${target} to remove`);
    disk.parentNode!.removeChild(disk);
  }

  if (rw.newMac !== undefined) {
    const devices = firstChild(root, 'devices');
    for (const iface of devices ? childElements(devices, 'interface') : []) {
      const to = rw.newMac();
      let mac = firstChild(iface, 'mac');
      const from = mac?.getAttribute('address') ?? null;
      if (mac === undefined) {
        mac = doc.createElement('mac');
        iface.insertBefore(mac, iface.firstChild);
      }
      mac.setAttribute('address', to);
      macs.push({ from, to });
    }
  }

  if (rw.freshNvram) {
    const os = firstChild(root, 'os');
    for (const nvram of os ? childElements(os, 'nvram') : []) {
      while (nvram.firstChild) nvram.removeChild(nvram.firstChild);
      nvram.removeAttribute('type');
    }
  }

  return { xml: new XMLSerializer().serializeToString(doc), macs };
}
