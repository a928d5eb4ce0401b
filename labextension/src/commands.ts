/**
 * Hiding a command everywhere it appears (menus, context menus, the palette, the launcher, key bindings).
 *
 * Lumino has no public way to remove a command someone else registered, so the registered definition is
 * changed in place: never visible, never enabled (key bindings check this), and executing it only explains
 * the refusal. The unit tests run this against the installed @lumino/commands, so an upgrade that changes
 * the registry's internals fails the build instead of silently showing the items again.
 */
import { CommandRegistry } from '@lumino/commands';

interface IMutableCommand {
  execute: (args: unknown) => unknown;
  isEnabled: (args: unknown) => boolean;
  isVisible: (args: unknown) => boolean;
}

function definition(commands: CommandRegistry, id: string): IMutableCommand | undefined {
  const registry = (commands as unknown as { _commands?: Map<string, IMutableCommand> })._commands;
  if (!(registry instanceof Map)) {
    throw new Error('@lumino/commands changed: the command registry cannot be restricted');
  }
  return registry.get(id);
}

/** Hide `id`; running it anyway calls `refused`. Returns whether the command exists. */
export function hideCommand(
  commands: CommandRegistry,
  id: string,
  refused: (id: string) => void
): boolean {
  const command = definition(commands, id);
  if (!command) {
    return false;
  }
  command.isVisible = () => false;
  command.isEnabled = () => false;
  command.execute = () => {
    refused(id);
    return undefined;
  };
  commands.notifyCommandChanged(id);
  return true;
}

/**
 * Hides every command `blocked` says, now and whenever one is added later (plugins activate lazily), and shows
 * again, as it was, a command the rule no longer blocks after `refresh()` (the rule read a placeholder until
 * the session was known). `hidden` holds the ids hidden now (for the page's data attribute that tests and
 * admins read); `changed` hears when it changes (not at every command change: JupyterLab makes hundreds while
 * it starts).
 */
export class CommandRestriction {
  readonly hidden = new Set<string>();

  constructor(
    private readonly commands: CommandRegistry,
    private readonly blocked: (id: string) => boolean,
    private readonly refused: (id: string) => void,
    private readonly changed: (hidden: Set<string>) => void = () => undefined
  ) {
    commands.listCommands().forEach(id => this.hide(id));
    commands.commandChanged.connect((_, change) => {
      if (change.type === 'added' && change.id) {
        this.hide(change.id);
      } else if (change.type === 'removed' && change.id) {
        // A command added again under this id is a new definition: hidden (or not) on its own.
        this.originals.delete(change.id);
        if (this.hidden.delete(change.id)) {
          this.changed(this.hidden);
        }
      }
    });
  }

  /** Apply the rule again to every command: hide what it blocks now, show what it no longer blocks. */
  refresh(): void {
    for (const id of this.commands.listCommands()) {
      this.hide(id);
    }
    const before = this.hidden.size;
    for (const id of [...this.hidden]) {
      if (this.blocked(id)) {
        continue;
      }
      const command = definition(this.commands, id);
      const original = this.originals.get(id);
      if (command && original) {
        Object.assign(command, original);
        this.commands.notifyCommandChanged(id);
      }
      this.hidden.delete(id);
      this.originals.delete(id);
    }
    if (this.hidden.size !== before) {
      this.changed(this.hidden);
    }
  }

  private hide(id: string): void {
    if (this.hidden.has(id) || !this.blocked(id)) {
      return;
    }
    const command = definition(this.commands, id);
    if (!command) {
      return;
    }
    const { execute, isEnabled, isVisible } = command;
    if (hideCommand(this.commands, id, this.refused)) {
      this.originals.set(id, { execute, isEnabled, isVisible });
      this.hidden.add(id);
      this.changed(this.hidden);
    }
  }

  private readonly originals = new Map<string, IMutableCommand>();
}

/** Hide every command `blocked` says, now and later; returns the ids hidden (see `CommandRestriction`). */
export function restrictCommands(
  commands: CommandRegistry,
  blocked: (id: string) => boolean,
  refused: (id: string) => void
): Set<string> {
  return new CommandRestriction(commands, blocked, refused).hidden;
}
