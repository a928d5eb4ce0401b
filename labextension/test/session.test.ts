import { PAGE_CONFIG_KEY, sessionFromPageConfig } from '../src/session';

const SESSION = {
  project: 'cardio',
  user: 'alice',
  role: 'data_scientist',
  rights: {
    write: true,
    download: false,
    upload: false,
    read_data_as_text: false,
    terminals: false
  },
  refusal_reasons: { download: 'the policy lets only data owners download' },
  limits: { max_wall_time_minutes: 480, max_gpus: 1, key_ttl_seconds: 3600 },
  server_started_at: 1700000000,
  classification: 'Confidential',
  support_contact: "the project's data owner",
  now: 1700000100
};

/** PageConfig.getOption's way: every value is text, objects as JSON, absent as ''. */
function pageConfig(values: Record<string, unknown>): (name: string) => string {
  return name => {
    const value = values[name];
    if (value === undefined) {
      return '';
    }
    return typeof value === 'string' ? value : JSON.stringify(value);
  };
}

describe('sessionFromPageConfig', () => {
  it('reads the session the server put in the page configuration', () => {
    expect(sessionFromPageConfig(pageConfig({ [PAGE_CONFIG_KEY]: SESSION }))).toEqual(SESSION);
  });

  it('answers null where the page has none (the extension then asks the endpoint)', () => {
    expect(sessionFromPageConfig(pageConfig({ baseUrl: '/' }))).toBeNull();
  });

  it('answers null for something that is not a session, and says so', () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      for (const broken of ['{not json', { project: 'cardio' }, [1, 2], 'null']) {
        expect(sessionFromPageConfig(pageConfig({ [PAGE_CONFIG_KEY]: broken }))).toBeNull();
      }
      expect(warn).toHaveBeenCalledTimes(4);
    } finally {
      warn.mockRestore();
    }
  });
});
