/**
 * Which JupyterLab commands lead to a route the server refuses for a role. Pure functions (unit tested):
 * the rules are written against command ids, with patterns for the kinds of command (downloads, exports)
 * so that a command a newer JupyterLab adds is caught too; the browser test enumerates the registry.
 */
import { IRights } from './session';

/** Commands that hand a file's bytes to the browser: downloads, exports, raw views, download links. */
export const DOWNLOAD_COMMANDS = [
  'docmanager:download',
  'docmanager:open-browser-tab',
  'filebrowser:download',
  'filebrowser:copy-download-link',
  'filebrowser:open-browser-tab',
  'notebook:export-to-format'
];
/** Kinds of command id that are downloads whatever their extension calls them. */
// (The licence report is a file download too, which the server refuses: licences are shown, not taken.)
export const DOWNLOAD_PATTERNS = [/download/i, /export/i, /open-browser-tab/i, /license-report/i];

/** Commands that bring data into the project from outside (the server refuses them as uploads). */
export const UPLOAD_COMMANDS = ['filebrowser:open-url'];
export const UPLOAD_PATTERNS = [/upload/i];

export const TERMINAL_PATTERNS = [/^terminal:/];

/** Refused for every role by the server: shared documents, the extension manager. */
export const ALWAYS_PATTERNS = [/^collaboration:/i, /^extensionmanager:/i, /^docmanager:share/i];

export type Right = keyof IRights;

/** The right a command needs, or 'never' for commands the server refuses for everyone; null: none. */
export function rightNeeded(id: string): Right | 'never' | null {
  if (ALWAYS_PATTERNS.some(pattern => pattern.test(id))) {
    return 'never';
  }
  if (DOWNLOAD_COMMANDS.includes(id) || DOWNLOAD_PATTERNS.some(pattern => pattern.test(id))) {
    return 'download';
  }
  if (UPLOAD_COMMANDS.includes(id) || UPLOAD_PATTERNS.some(pattern => pattern.test(id))) {
    return 'upload';
  }
  if (TERMINAL_PATTERNS.some(pattern => pattern.test(id))) {
    return 'terminals';
  }
  return null;
}

/** Whether the role may use the command; an unknown right is refused (deny by default). */
export function isAllowed(id: string, rights: IRights): boolean {
  const needed = rightNeeded(id);
  if (needed === null) {
    return true;
  }
  if (needed === 'never') {
    return false;
  }
  return rights[needed] === true;
}

/** The commands of `ids` that this role may not use. */
export function blockedCommands(ids: readonly string[], rights: IRights): string[] {
  return ids.filter(id => !isAllowed(id, rights));
}
