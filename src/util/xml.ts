/**
 * The few DOM helpers kvmbak needs to read and edit libvirt XML (internal:
 * not exported from the package). Shared by libvirt/ (reading disks) and
 * restore/ (rewriting a domain), so both parse the same way.
 */
import { DOMParser, type Document, type Element } from '@xmldom/xmldom';

/**
 * Parses XML text strictly: any parser error (not a warning) throws an
 * Error with the parser's message. The caller wraps it in its own error.
 */
export function parseXml(xml: string): Document {
  return new DOMParser({
    onError: (level: string, message: string) => {
      if (level !== 'warning') throw new Error(message);
    },
  }).parseFromString(xml, 'text/xml');
}

/** The element children of `parent` named `name`, in document order. */
export function childElements(parent: Element, name: string): Element[] {
  const out: Element[] = [];
  for (let n = parent.firstChild; n !== null; n = n.nextSibling) {
    if (n.nodeType === 1 && (n as Element).tagName === name) out.push(n as Element);
  }
  return out;
}

/** The first element child of `parent` named `name`. */
export function firstChild(parent: Element, name: string): Element | undefined {
  return childElements(parent, name)[0];
}

/** An attribute's value, undefined when the element or the attribute is absent. */
export function attr(el: Element | undefined, name: string): string | undefined {
  if (el === undefined || !el.hasAttribute(name)) return undefined;
  return el.getAttribute(name) ?? undefined;
}
