/**
 * jupyter-securehpc's JupyterLab extension: the session's project, role and rights made visible, the refused
 * paths made absent. The server extension stays the enforcement; everything here follows the session it
 * describes (in the page configuration, else `GET /securehpc/session`) and never allows more than it does.
 *
 * Activation never waits: the session is in the page, or, while the endpoint is asked, every command a right
 * governs is hidden (deny by default) and what the role may use is shown once the answer is there.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { URLExt, PageConfig } from '@jupyterlab/coreutils';
import { CommandRegistry } from '@lumino/commands';
import { Menu } from '@lumino/widgets';

import { SessionBanner } from './banner';
import { isAllowed } from './blocked';
import { CommandRestriction } from './commands';
import { Refusals, refusalReason } from './refusals';
import {
  fetchSession,
  IRights,
  ISessionInfo,
  pageReceivedAt,
  sessionFromPageConfig
} from './session';

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

const READING = 'reading the session: downloads, uploads and terminals are hidden until then';
const UNAVAILABLE = 'session details unavailable: downloads, uploads and terminals are hidden';

function unknownSession(classification: string): ISessionInfo {
  return {
    project: '(unknown)',
    user: PageConfig.getOption('hubUser') || '',
    role: 'unknown',
    rights: NO_RIGHTS,
    refusal_reasons: {},
    limits: { max_wall_time_minutes: 0, max_gpus: 0, key_ttl_seconds: 0 },
    server_started_at: Date.now() / 1000,
    classification,
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

/** The session on the page's body for CSS and tests (`null`: a stock server, nothing marked). */
function markPage(info: ISessionInfo | null, hidden: Set<string>): void {
  const body = document.body;
  const rights: Partial<IRights> = info?.rights ?? {};
  for (const right of Object.keys(NO_RIGHTS)) {
    body.classList.toggle(
      `jp-SecureHPC-no-${right}`,
      info !== null && rights[right as keyof IRights] !== true
    );
  }
  if (info === null) {
    for (const name of ['securehpcProject', 'securehpcRole', 'securehpcHidden']) {
      delete body.dataset[name];
    }
    return;
  }
  // Written only when changed: this runs on every command change while JupyterLab starts.
  const marks = {
    securehpcProject: info.project,
    securehpcRole: info.role,
    securehpcHidden: [...hidden].sort().join(' ')
  };
  for (const [name, value] of Object.entries(marks)) {
    if (body.dataset[name] !== value) {
      body.dataset[name] = value;
    }
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

/**
 * Files dropped from the desktop where the role may not upload (`mayUpload` answers for the session as known
 * now): explained, nothing sent, nothing opened.
 */
function refuseDroppedFiles(refusals: Refusals, mayUpload: () => boolean): void {
  const hasFiles = (event: DragEvent): boolean =>
    !mayUpload() && Array.from(event.dataTransfer?.types ?? []).includes('Files');
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

/** The commands' labels and visibility, for admins and the browser tests (see `activate`). */
function listCommands(app: JupyterFrontEnd): { id: string; label: string; visible: boolean }[] {
  return app.commands.listCommands().map(id => {
    let label = '';
    try {
      label = app.commands.label(id, {});
    } catch {
      // a label that needs arguments
    }
    return { id, label, visible: app.commands.isVisible(id, {}) };
  });
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-securehpc-labextension:plugin',
  description:
    'Shows the secure project and role; removes the downloads, exports and uploads the server refuses.',
  autoStart: true,
  optional: [IMainMenu],
  // Not async: JupyterLab attaches its shell (and the file browser) only once every plugin has activated.
  activate: (app: JupyterFrontEnd, mainMenu: IMainMenu | null): void => {
    const fromPage = sessionFromPageConfig();
    // The session as known now: from the page, else a placeholder without rights until the server answers;
    // null once the server said it has no secure session (a stock server: nothing to show or hide).
    let current: ISessionInfo | null = fromPage ?? unknownSession(READING);
    const refusals = new Refusals(() => current ?? unknownSession(UNAVAILABLE));
    const restriction = new CommandRestriction(
      app.commands,
      id => current !== null && !isAllowed(id, current.rights),
      id => void refusals.command(id),
      hidden => markPage(current, hidden)
    );
    markPage(current, restriction.hidden);
    // For admins and the browser tests: every command with its label and whether it is shown, so that a
    // command a newer JupyterLab adds (and this extension does not know) can be found.
    (window as unknown as Record<string, unknown>).jupyterSecureHPC = {
      hidden: () => [...restriction.hidden].sort(),
      commands: () => listCommands(app)
    };
    refuseDroppedFiles(refusals, () => current === null || current.rights.upload === true);

    const settle = (info: ISessionInfo | null, receivedAt: number): ISessionInfo | null => {
      current = info;
      restriction.refresh();
      markPage(info, restriction.hidden);
      if (info !== null) {
        explainServerRefusals(
          refusals,
          app.serviceManager.serverSettings as unknown as { fetch: Fetch }
        );
        app.shell.add(new SessionBanner(info, info.now * 1000 - receivedAt), 'top', { rank: 1 });
        keepProjectInTitle(info.project);
      }
      return info;
    };
    const known: Promise<ISessionInfo | null> = fromPage
      ? Promise.resolve(settle(fromPage, pageReceivedAt()))
      : fetchSession()
          .catch((error: unknown) => {
            console.error(
              'jupyter-securehpc: the session could not be read; hiding every restricted item',
              error
            );
            return unknownSession(UNAVAILABLE);
          })
          .then(info => settle(info, Date.now()));
    // After every plugin has added its menu items and the rights are known (waiting for either here would
    // hold up the application's start).
    void Promise.all([app.restored, known]).then(([, info]) => {
      if (info === null) {
        return;
      }
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
