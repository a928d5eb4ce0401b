/**
 * The session as the server extension enforces it (`GET /securehpc/session`): the only source of the
 * extension's decisions. The server decides every request on its own; what is hidden here is refused there.
 */
import { URLExt } from '@jupyterlab/coreutils';
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
  return (await response.json()) as ISessionInfo;
}

/** When the job ends at the latest (milliseconds since the epoch). */
export function sessionEndsBy(info: ISessionInfo): number {
  return (info.server_started_at + info.limits.max_wall_time_minutes * 60) * 1000;
}
