/**
 * Saying what was refused, why and what to do, instead of a bare error: for commands the extension hid (run
 * anyway through a shortcut or a link), for files dropped into the file browser where the role may not
 * upload, and for any refusal the server makes that the UI could not foresee.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ISessionInfo } from './session';
import { roleName } from './banner';
import { rightNeeded } from './blocked';

const WHAT: Record<string, string> = {
  download: 'Taking files out of the project (downloads, exports, raw views)',
  upload: 'Bringing files into the project (uploads)',
  terminals: 'Terminals',
  never: 'This feature',
  write: 'Changing the project'
};

export class Refusals {
  /** `session` gives the session as known now (a placeholder without rights until it is read). */
  constructor(private readonly session: () => ISessionInfo) {}

  private get info(): ISessionInfo {
    return this.session();
  }

  /** A refusal of the kind `right` (a right the role lacks). */
  explain(right: string, detail?: string): Promise<void> {
    const info = this.info;
    const reasons = info.refusal_reasons as Record<string, string | undefined>;
    const why =
      right === 'never'
        ? 'It is switched off in every secure project.'
        : (reasons[right] ?? 'The project policy does not allow it.');
    return this.show(
      `${WHAT[right] ?? 'This'} is not allowed for a ${roleName(info.role)} in project ${info.project}`,
      why,
      detail
    );
  }

  /** Running a command the extension hid. */
  command(id: string): Promise<void> {
    return this.explain(rightNeeded(id) ?? 'never', `(${id})`);
  }

  /**
   * A 403 of the server that no hidden item led to. A notification, not a dialog: JupyterLab often shows its
   * own error dialog for the same request (with the reason), and a second dialog would wait behind it.
   */
  server(method: string, path: string, reason: string): void {
    const key = `${method} ${path}`;
    if (this.notified.has(key)) {
      return;
    }
    this.notified.add(key);
    window.setTimeout(() => this.notified.delete(key), 10000);
    // Short (JupyterLab cuts notifications at 140 characters); the reason is one click away.
    Notification.warning(
      `The server refused ${method} ${path}. Ask ${this.info.support_contact}.`,
      {
        autoClose: false,
        actions: [
          {
            label: 'Why?',
            callback: () => void this.show(`The server refused ${method} ${path}`, reason)
          }
        ]
      }
    );
  }

  private notified = new Set<string>();

  private async show(title: string, why: string, detail?: string): Promise<void> {
    if (this.open) {
      return; // one explanation at a time
    }
    this.open = true;
    const body = document.createElement('div');
    body.className = 'jp-SecureHPC-refusal';
    const lines = [
      ['Why', why],
      [
        'What to do',
        `Data leaves a project only through a reviewed release. Ask ${this.info.support_contact}.`
      ]
    ];
    for (const [label, text] of lines) {
      const line = document.createElement('p');
      const name = document.createElement('strong');
      name.textContent = `${label}: `;
      line.append(name, document.createTextNode(text));
      body.append(line);
    }
    if (detail) {
      const small = document.createElement('p');
      small.className = 'jp-SecureHPC-refusal-detail';
      small.textContent = detail;
      body.append(small);
    }
    try {
      await showDialog({
        title,
        body: new DialogBody(body),
        buttons: [Dialog.okButton({ label: 'OK' })]
      });
    } finally {
      this.open = false;
    }
  }

  private open = false;
}

class DialogBody extends Widget {
  constructor(node: HTMLElement) {
    super({ node });
  }
}

/** Text of a refusal answer: the server's JSON `message`, else its status line. */
export async function refusalReason(response: Response): Promise<string> {
  try {
    const data = await response.clone().json();
    if (data && typeof data.message === 'string' && data.message) {
      return data.message;
    }
  } catch {
    // not JSON: an HTML error page
  }
  return `${response.status} ${response.statusText}`.trim();
}
