/**
 * @jest-environment jsdom
 */
import { CommandRegistry } from '@lumino/commands';

import { CommandRestriction, hideCommand, restrictCommands } from '../src/commands';

function registry(): { commands: CommandRegistry; ran: string[] } {
  const commands = new CommandRegistry();
  const ran: string[] = [];
  for (const id of ['docmanager:download', 'docmanager:save']) {
    commands.addCommand(id, { label: id, execute: () => void ran.push(id) });
  }
  return { commands, ran };
}

describe('hideCommand (against the installed @lumino/commands)', () => {
  it('makes the command invisible and disabled, and running it explains instead', async () => {
    const { commands, ran } = registry();
    const refused: string[] = [];
    expect(hideCommand(commands, 'docmanager:download', id => refused.push(id))).toBe(true);
    expect(commands.isVisible('docmanager:download')).toBe(false);
    expect(commands.isEnabled('docmanager:download')).toBe(false);
    await commands.execute('docmanager:download');
    expect(ran).toEqual([]);
    expect(refused).toEqual(['docmanager:download']);
    expect(commands.isVisible('docmanager:save')).toBe(true);
  });

  it('says when there is no such command', () => {
    const { commands } = registry();
    expect(hideCommand(commands, 'nothing:here', () => undefined)).toBe(false);
  });
});

describe('restrictCommands', () => {
  it('hides the blocked commands present now and those added later', () => {
    const { commands } = registry();
    const hidden = restrictCommands(
      commands,
      id => id.includes('download'),
      () => undefined
    );
    expect([...hidden]).toEqual(['docmanager:download']);
    commands.addCommand('later:download-all', { label: 'later', execute: () => undefined });
    expect(commands.isVisible('later:download-all')).toBe(false);
    expect([...hidden].sort()).toEqual(['docmanager:download', 'later:download-all']);
  });
});

describe('CommandRestriction', () => {
  it('hides everything a placeholder rule blocks, then shows again, as it was, what the real rule allows', async () => {
    const { commands, ran } = registry();
    let known = false; // until the session is read, every download is hidden
    const refused: string[] = [];
    const restriction = new CommandRestriction(
      commands,
      id => !known && id.includes('download'),
      id => refused.push(id)
    );
    expect(commands.isVisible('docmanager:download')).toBe(false);
    await commands.execute('docmanager:download');
    expect(refused).toEqual(['docmanager:download']);
    known = true;
    restriction.refresh();
    expect([...restriction.hidden]).toEqual([]);
    expect(commands.isVisible('docmanager:download')).toBe(true);
    expect(commands.isEnabled('docmanager:download')).toBe(true);
    await commands.execute('docmanager:download');
    expect(ran).toEqual(['docmanager:download']);
  });

  it('hides what a refreshed rule blocks, also a command removed and added again', () => {
    const { commands } = registry();
    let blocked = 'nothing';
    const seen: string[][] = [];
    const restriction = new CommandRestriction(
      commands,
      id => id === blocked,
      () => undefined,
      hidden => seen.push([...hidden])
    );
    expect(commands.isVisible('docmanager:save')).toBe(true);
    blocked = 'later:export';
    const added = commands.addCommand('later:export', { label: 'x', execute: () => undefined });
    expect(commands.isVisible('later:export')).toBe(false);
    added.dispose();
    expect([...restriction.hidden]).toEqual([]);
    commands.addCommand('later:export', { label: 'x', execute: () => undefined });
    expect(commands.isVisible('later:export')).toBe(false);
    blocked = 'docmanager:save';
    restriction.refresh();
    expect(commands.isVisible('docmanager:save')).toBe(false);
    expect(commands.isVisible('later:export')).toBe(true);
    expect([...restriction.hidden]).toEqual(['docmanager:save']);
    // Told each time the hidden set changed, never for the commands it left alone.
    expect(seen).toEqual([
      ['later:export'],
      [],
      ['later:export'],
      ['later:export', 'docmanager:save'],
      ['docmanager:save']
    ]);
  });
});
