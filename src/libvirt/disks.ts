/**
 * parseDomainDisks: the disks of a domain, read from its XML description
 * (virDomainGetXMLDesc / `virsh dumpxml`). Pure: no libvirt needed.
 */
import type { Element } from '@xmldom/xmldom';
import { ConfigError } from '../errors.js';
import { attr, childElements, firstChild, parseXml } from '../util/xml.js';

export const DISK_DEVICES = ['disk', 'cdrom', 'floppy', 'lun'] as const;
export type DiskDevice = (typeof DISK_DEVICES)[number];

export const DISK_TYPES = ['block', 'file', 'network', 'volume', 'dir', 'nvme', 'vhostuser', 'vhostvdpa'] as const;
export type DiskType = (typeof DISK_TYPES)[number];

export interface DomainDisk {
  /** target/@dev: 'vda', 'sda', ... (what virDomainGetBlockInfo takes). */
  target: string;
  device: DiskDevice;
  type: DiskType;
  /**
   * Where the data is: the device path (type 'block'), the file (type 'file'),
   * the directory (type 'dir'), `pool/volume` (type 'volume', as virsh
   * domblklist shows it) or `protocol:name` (type 'network', e.g.
   * 'rbd:pool/image'). Absent for an empty cdrom/floppy.
   */
  source?: string;
  /** source/@pool of a 'volume' disk. */
  pool?: string;
  /** source/@volume of a 'volume' disk. */
  volume?: string;
  /** source/@protocol of a 'network' disk ('rbd', 'iscsi', 'nbd', ...). */
  protocol?: string;
  /** driver/@type: the image format ('raw', 'qcow2', ...). */
  format?: string;
  /** True when the disk has <readonly/>. */
  readonly: boolean;
  /** target/@bus ('virtio', 'sata', 'scsi', 'ide', ...). */
  bus?: string;
}

/** The XML could not be read as a libvirt domain description. */
function xmlError(message: string, cause?: unknown): ConfigError {
  return new ConfigError(message, 'xml', cause === undefined ? {} : { cause });
}

function oneOf<T extends string>(values: readonly T[], v: string, what: string, target: string): T {
  if ((values as readonly string[]).includes(v)) return v as T;
  throw xmlError(`disk ${target}: unknown ${what} '${v}' (expected one of ${values.join(', ')})`);
}

type DiskSource = Pick<DomainDisk, 'source' | 'pool' | 'volume' | 'protocol'>;

function sourceOf(type: DiskType, source: Element | undefined): DiskSource {
  if (source === undefined) return {};
  switch (type) {
    case 'block':
      return { source: attr(source, 'dev') };
    case 'file':
      return { source: attr(source, 'file') };
    case 'dir':
      return { source: attr(source, 'dir') };
    case 'volume': {
      const pool = attr(source, 'pool');
      const volume = attr(source, 'volume');
      return {
        pool,
        volume,
        source: pool !== undefined && volume !== undefined ? `${pool}/${volume}` : volume,
      };
    }
    case 'network': {
      const protocol = attr(source, 'protocol');
      const name = attr(source, 'name');
      const text = protocol !== undefined && name !== undefined ? `${protocol}:${name}` : (name ?? protocol);
      return { protocol, source: text };
    }
    case 'nvme': {
      const ns = attr(source, 'namespace');
      const address = firstChild(source, 'address');
      const pci = address ? ['domain', 'bus', 'slot', 'function'].map((k) => attr(address, k) ?? '').join(':') : undefined;
      return { source: pci !== undefined ? `nvme:${pci}${ns !== undefined ? `/ns${ns}` : ''}` : undefined };
    }
    default:
      return { source: attr(source, 'path') };
  }
}

/** Drops the keys whose value is undefined (so objects compare and print cleanly). */
function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/**
 * Lists the <disk> devices of a domain XML, in document order.
 * Throws ConfigError (code KVMBAK_INVALID_ARGUMENT, option 'xml') when the XML is not well-formed, is not a <domain>,
 * or a disk lacks a target.
 */
export function parseDomainDisks(xml: string): DomainDisk[] {
  let doc;
  try {
    doc = parseXml(xml);
  } catch (e) {
    throw xmlError(`domain XML is not well-formed: ${(e as Error).message}`, e);
  }
  const root = doc.documentElement;
  if (root === null || root.tagName !== 'domain') {
    throw xmlError(`not a libvirt domain description: the root element is <${root?.tagName ?? ''}>, not <domain>`);
  }
  const devices = firstChild(root, 'devices');
  if (devices === undefined) return [];
  return childElements(devices, 'disk').map((disk, i) => {
    const targetEl = firstChild(disk, 'target');
    const target = attr(targetEl, 'dev');
    if (target === undefined || target === '') {
      throw xmlError(`disk #${i + 1} has no <target dev=...>`);
    }
    const type = oneOf(DISK_TYPES, attr(disk, 'type') ?? 'file', 'type', target);
    const device = oneOf(DISK_DEVICES, attr(disk, 'device') ?? 'disk', 'device', target);
    return compact<DomainDisk>({
      target,
      device,
      type,
      ...sourceOf(type, firstChild(disk, 'source')),
      format: attr(firstChild(disk, 'driver'), 'type'),
      readonly: firstChild(disk, 'readonly') !== undefined,
      bus: attr(targetEl, 'bus'),
    });
  });
}
