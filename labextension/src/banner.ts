/** The always-visible banner: project, role, classification, and how long the session may still run. */
import { Widget } from '@lumino/widgets';

import { ISessionInfo, sessionEndsBy } from './session';

const ROLE_NAMES: Record<string, string> = {
  data_owner: 'data owner',
  data_scientist: 'data scientist',
  observer: 'observer'
};

export function roleName(role: string): string {
  return ROLE_NAMES[role] ?? role;
}

/** "2 h 05 min" / "12 min" / "less than a minute" */
export function remaining(milliseconds: number): string {
  const minutes = Math.floor(milliseconds / 60000);
  if (minutes < 1) {
    return 'less than a minute';
  }
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return hours > 0 ? `${hours} h ${String(rest).padStart(2, '0')} min` : `${rest} min`;
}

export class SessionBanner extends Widget {
  constructor(
    private readonly info: ISessionInfo,
    private readonly clockSkew: number
  ) {
    super();
    this.id = 'securehpc-banner';
    this.addClass('jp-SecureHPC-banner');
    this.node.setAttribute('role', 'status');
    this.update();
    this._timer = window.setInterval(() => this.update(), 30000);
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  protected onUpdateRequest(): void {
    const info = this.info;
    const left = sessionEndsBy(info) - (Date.now() + this.clockSkew);
    const parts = [
      ['Project', info.project],
      ['Role', roleName(info.role)],
      ...(info.classification ? [['Classification', info.classification]] : []),
      ['Session ends in', left > 0 ? `at most ${remaining(left)}` : 'any moment']
    ];
    this.node.replaceChildren(
      ...parts.map(([label, value]) => {
        const item = document.createElement('span');
        item.className = 'jp-SecureHPC-banner-item';
        item.dataset.field = label;
        const name = document.createElement('span');
        name.className = 'jp-SecureHPC-banner-label';
        name.textContent = `${label}: `;
        const text = document.createElement('strong');
        text.textContent = value;
        item.append(name, text);
        return item;
      })
    );
  }

  private _timer: number;
}
