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
 * Hide every command `blocked` says, now and whenever one is added later (plugins activate lazily).
 * Returns the ids hidden so far (for the page's data attribute that tests and admins read).
 */
export function restrictCommands(
  commands: CommandRegistry,
  blocked: (id: string) => boolean,
  refused: (id: string) => void
): Set<string> {
  const hidden = new Set<string>();
  const hide = (id: string): void => {
    if (!hidden.has(id) && blocked(id) && hideCommand(commands, id, refused)) {
      hidden.add(id);
    }
  };
  commands.listCommands().forEach(hide);
  commands.commandChanged.connect((_, change) => {
    if (change.type === 'added' && change.id) {
      hide(change.id);
    }
  });
  return hidden;
}
