/**
 * jupyter-securehpc's JupyterLab extension: the session's project, role and rights made visible, the refused
 * paths made absent. The server extension stays the enforcement; everything here follows its
 * `GET /securehpc/session` and never allows more than the server does.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { URLExt, PageConfig } from '@jupyterlab/coreutils';
import { CommandRegistry } from '@lumino/commands';
import { Menu } from '@lumino/widgets';

import { SessionBanner } from './banner';
import { isAllowed } from './blocked';
import { restrictCommands } from './commands';
import { Refusals, refusalReason } from './refusals';
import { fetchSession, IRights, ISessionInfo } from './session';

// Server routes whose refusal follows something the person did (open, save, run, export): explained in a
// dialog. Other 403s (background saves of the layout, which sessions keep read-only) only reach the console.
const EXPLAINED = [
  'api/contents',
  'files',
  'view',
  'nbconvert',
  'api/terminals',
  'terminals',
  'api/kernels',
  'api/sessions'
];

/** Fail closed: a session the server could not describe gets no right the extension can take away. */
const NO_RIGHTS: IRights = {
  write: false,
  download: false,
  upload: false,
  read_data_as_text: false,
  terminals: false
};

function unknownSession(): ISessionInfo {
  return {
    project: '(unknown)',
    user: PageConfig.getOption('hubUser') || '',
    role: 'unknown',
    rights: NO_RIGHTS,
    refusal_reasons: {},
    limits: { max_wall_time_minutes: 0, max_gpus: 0, key_ttl_seconds: 0 },
    server_started_at: Date.now() / 1000,
    classification: 'session details unavailable: downloads, uploads and terminals are hidden',
    support_contact: 'your hub administrator',
    now: Date.now() / 1000
  };
}

/** Remove submenus that nothing visible is left in ("Save and Export Notebook As" for most roles). */
function pruneMenu(menu: Menu, commands: CommandRegistry): boolean {
  for (const item of [...menu.items]) {
    if (item.type === 'submenu' && item.submenu && !pruneMenu(item.submenu, commands)) {
      menu.removeItem(item);
    }
  }
  return menu.items.some(
    item =>
      (item.type === 'command' && commands.isVisible(item.command, item.args)) ||
      (item.type === 'submenu' && item.submenu !== null)
  );
}

function markPage(info: ISessionInfo, hidden: Set<string>): void {
  const body = document.body;
  body.dataset.securehpcProject = info.project;
  body.dataset.securehpcRole = info.role;
  body.dataset.securehpcHidden = [...hidden].sort().join(' ');
  for (const [right, allowed] of Object.entries(info.rights)) {
    body.classList.toggle(`jp-SecureHPC-no-${right}`, !allowed);
  }
}

function keepProjectInTitle(project: string): void {
  const prefix = `[${project}] `;
  const fix = (): void => {
    if (!document.title.startsWith(prefix)) {
      document.title = prefix + document.title;
    }
  };
  fix();
  const title = document.querySelector('title');
  if (title) {
    new MutationObserver(fix).observe(title, {
      childList: true,
      characterData: true,
      subtree: true
    });
  }
}

/** Files dropped from the desktop where the role may not upload: explained, nothing sent, nothing opened. */
function refuseDroppedFiles(refusals: Refusals): void {
  const hasFiles = (event: DragEvent): boolean =>
    Array.from(event.dataTransfer?.types ?? []).includes('Files');
  document.addEventListener(
    'dragover',
    event => {
      if (hasFiles(event)) {
        event.preventDefault();
        event.stopPropagation();
        if (event.dataTransfer) {
          event.dataTransfer.dropEffect = 'none';
        }
      }
    },
    true
  );
  document.addEventListener(
    'drop',
    event => {
      if (hasFiles(event)) {
        event.preventDefault();
        event.stopPropagation();
        void refusals.explain('upload');
      }
    },
    true
  );
}

type Fetch = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

/**
 * Refusals the UI could not foresee (a policy changed under it, a route it does not know). JupyterLab's
 * services took their `fetch` when the application was made, before any plugin: their shared settings object
 * gets the watching one too, beside the page's own `window.fetch`.
 */
function explainServerRefusals(refusals: Refusals, settings: { fetch: Fetch }): void {
  settings.fetch = watchRefusals(refusals, settings.fetch);
  window.fetch = watchRefusals(refusals, window.fetch.bind(window));
}

function watchRefusals(refusals: Refusals, original: Fetch): Fetch {
  const base = new URL(PageConfig.getBaseUrl(), window.location.href).pathname;
  return async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const response = await original(input, init);
    if (response.status === 403) {
      const url = new URL(
        input instanceof Request ? input.url : String(input),
        window.location.href
      );
      const route = url.pathname.startsWith(base) ? url.pathname.slice(base.length) : '';
      const method = (
        init?.method ?? (input instanceof Request ? input.method : 'GET')
      ).toUpperCase();
      if (EXPLAINED.some(prefix => route === prefix || route.startsWith(prefix + '/'))) {
        void refusalReason(response).then(reason =>
          refusals.server(method, decodeURIComponent(URLExt.join('/', route)), reason)
        );
      } else {
        console.warn(`jupyter-securehpc: the server refused ${method} ${url.pathname}`);
      }
    }
    return response;
  };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-securehpc-labextension:plugin',
  description:
    'Shows the secure project and role; removes the downloads, exports and uploads the server refuses.',
  autoStart: true,
  optional: [IMainMenu],
  activate: async (app: JupyterFrontEnd, mainMenu: IMainMenu | null): Promise<void> => {
    let info: ISessionInfo | null;
    try {
      info = await fetchSession();
    } catch (error) {
      console.error(
        'jupyter-securehpc: the session could not be read; hiding every restricted item',
        error
      );
      info = unknownSession();
    }
    if (info === null) {
      return; // not a secure session (a stock server): nothing to show or hide
    }
    const session = info;
    const refusals = new Refusals(session);
    const hidden = restrictCommands(
      app.commands,
      id => !isAllowed(id, session.rights),
      id => void refusals.command(id)
    );
    markPage(session, hidden);
    // For admins and the browser tests: every command with its label and whether it is shown, so that a
    // command a newer JupyterLab adds (and this extension does not know) can be found.
    (window as unknown as Record<string, unknown>).jupyterSecureHPC = {
      hidden: () => [...hidden].sort(),
      commands: () =>
        app.commands.listCommands().map(id => {
          let label = '';
          try {
            label = app.commands.label(id, {});
          } catch {
            // a label that needs arguments
          }
          return { id, label, visible: app.commands.isVisible(id, {}) };
        })
    };
    app.commands.commandChanged.connect(() => markPage(session, hidden));
    if (!session.rights.upload) {
      refuseDroppedFiles(refusals);
    }
    explainServerRefusals(
      refusals,
      app.serviceManager.serverSettings as unknown as { fetch: Fetch }
    );
    const skew = session.now * 1000 - Date.now();
    app.shell.add(new SessionBanner(session, skew), 'top', { rank: 1 });
    keepProjectInTitle(session.project);
    // After every plugin has added its menu items (waiting here would hold up the application's start).
    void app.restored.then(() => {
      if (mainMenu) {
        for (const menu of (mainMenu as unknown as { menus: Menu[] }).menus ?? []) {
          pruneMenu(menu, app.commands);
        }
      }
      document.body.dataset.securehpcReady = 'true';
    });
  }
};

export default plugin;
