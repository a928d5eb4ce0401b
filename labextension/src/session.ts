/**
 * The session as the server extension enforces it: the only source of the extension's decisions. The server
 * puts it in the page configuration (`securehpcSession`), so that it is there when the extension activates;
 * `GET /securehpc/session` answers the same for a page without it. The server decides every request on its
 * own; what is hidden here is refused there.
 */
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IRights {
  write: boolean;
  download: boolean;
  upload: boolean;
  read_data_as_text: boolean;
  terminals: boolean;
}

export interface ISessionInfo {
  project: string;
  user: string;
  role: string;
  rights: IRights;
  /** The policy's reason for each right the role does not have. */
  refusal_reasons: Partial<Record<keyof IRights, string>>;
  limits: { max_wall_time_minutes: number; max_gpus: number; key_ttl_seconds: number };
  /** Seconds since the epoch; the job ends at most max_wall_time_minutes after this. */
  server_started_at: number;
  classification: string;
  support_contact: string;
  now: number;
}

export const SESSION_PATH = 'securehpc/session';
export const PAGE_CONFIG_KEY = 'securehpcSession';

/** Enough of the shape to decide with; a right that is not `true` is refused anyway (see `isAllowed`). */
function isSessionInfo(value: unknown): value is ISessionInfo {
  const info = value as Partial<ISessionInfo> | null;
  return (
    typeof info === 'object' &&
    info !== null &&
    typeof info.project === 'string' &&
    typeof info.role === 'string' &&
    typeof info.rights === 'object' &&
    info.rights !== null &&
    typeof info.limits === 'object' &&
    info.limits !== null &&
    typeof info.now === 'number'
  );
}

/**
 * The session the server wrote into the page, or null when the page has none (a server whose page
 * configuration hook did not run: ask the endpoint). `read` is PageConfig's (objects come as JSON text).
 */
export function sessionFromPageConfig(
  read: (name: string) => string = PageConfig.getOption
): ISessionInfo | null {
  const text = read(PAGE_CONFIG_KEY);
  if (!text) {
    return null;
  }
  try {
    const info: unknown = JSON.parse(text);
    if (isSessionInfo(info)) {
      return info;
    }
  } catch {
    // not JSON: said below
  }
  console.warn(`jupyter-securehpc: the page's ${PAGE_CONFIG_KEY} is unreadable; asking the server`);
  return null;
}

/**
 * When the page arrived (milliseconds since the epoch): the server's `now` in the page configuration was
 * taken just before, so the clock skew is measured against this, not against the end of loading.
 */
export function pageReceivedAt(): number {
  const [navigation] = performance.getEntriesByType('navigation') as PerformanceNavigationTiming[];
  return navigation && navigation.responseStart > 0
    ? performance.timeOrigin + navigation.responseStart
    : Date.now();
}

/** The session, or null where the server has no secure session (a stock server: nothing to hide). */
export async function fetchSession(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<ISessionInfo | null> {
  const url = URLExt.join(settings.baseUrl, SESSION_PATH);
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (response.status === 404) {
    return null;
  }
  if (!response.ok) {
    throw new Error(`${SESSION_PATH} answered ${response.status}`);
  }
  const info: unknown = await response.json();
  if (!isSessionInfo(info)) {
    throw new Error(`${SESSION_PATH} answered something that is not a session`);
  }
  return info;
}

/** When the job ends at the latest (milliseconds since the epoch). */
export function sessionEndsBy(info: ISessionInfo): number {
  return (info.server_started_at + info.limits.max_wall_time_minutes * 60) * 1000;
}
