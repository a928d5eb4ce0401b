import { blockedCommands, isAllowed, rightNeeded } from '../src/blocked';
import { IRights } from '../src/session';

const NONE: IRights = {
  write: false,
  download: false,
  upload: false,
  read_data_as_text: false,
  terminals: false
};
const ALL: IRights = {
  write: true,
  download: true,
  upload: true,
  read_data_as_text: true,
  terminals: true
};

describe('rightNeeded', () => {
  it.each([
    ['docmanager:download', 'download'],
    ['filebrowser:download', 'download'],
    ['filebrowser:copy-download-link', 'download'],
    ['filebrowser:open-browser-tab', 'download'],
    ['docmanager:open-browser-tab', 'download'],
    ['notebook:export-to-format', 'download'],
    ['help:license-report', 'download'],
    ['some-new-extension:download-all', 'download'],
    ['csv:Export-Table', 'download'],
    ['filebrowser:open-url', 'upload'],
    ['another:upload-folder', 'upload'],
    ['terminal:create-new', 'terminals'],
    ['collaboration:share', 'never'],
    ['extensionmanager:show-panel', 'never'],
    ['docmanager:save', null],
    ['notebook:run-cell', null],
    ['filebrowser:rename', null]
  ])('%s needs %s', (id, right) => {
    expect(rightNeeded(id)).toBe(right);
  });
});

describe('isAllowed', () => {
  it('refuses every restricted command without rights', () => {
    expect(isAllowed('docmanager:download', NONE)).toBe(false);
    expect(isAllowed('filebrowser:open-url', NONE)).toBe(false);
    expect(isAllowed('terminal:create-new', NONE)).toBe(false);
  });
  it('leaves everything to the policy for roles that have the rights', () => {
    expect(isAllowed('docmanager:download', ALL)).toBe(true);
    expect(isAllowed('filebrowser:open-url', ALL)).toBe(true);
    expect(isAllowed('terminal:create-new', ALL)).toBe(true);
  });
  it('refuses what the server refuses for everyone, whatever the rights', () => {
    expect(isAllowed('collaboration:share', ALL)).toBe(false);
    expect(isAllowed('extensionmanager:toggle', ALL)).toBe(false);
  });
  it('allows ordinary work', () => {
    expect(isAllowed('docmanager:save', NONE)).toBe(true);
  });
});

describe('blockedCommands', () => {
  it('keeps the registry order and only the refused ids', () => {
    const ids = [
      'docmanager:save',
      'docmanager:download',
      'terminal:create-new',
      'notebook:run-cell'
    ];
    expect(blockedCommands(ids, { ...NONE, terminals: true })).toEqual(['docmanager:download']);
  });
});
