/**
 * jupyter-llm for JupyterLab: a status-bar item with the kernel's active LLM target and session
 * cost, and two palette commands. Talks to the kernel over the comm target `jupyter_llm`
 * (kernel side: jupyter_llm/comm.py). Kernels that never ran `%load_ext jupyter_llm` get no item.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  InputDialog,
  ISessionContext,
  showErrorMessage
} from '@jupyterlab/apputils';
import { IConsoleTracker } from '@jupyterlab/console';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

const COMM_TARGET = 'jupyter_llm';
// Comm messages are handled between cells (ipykernel routes them to the main shell), so a busy
// kernel answers late: the target list is worth waiting for briefly, a switch until it happens.
const TARGETS_TIMEOUT_MS = 20000;
const USE_TIMEOUT_MS = 30 * 60 * 1000;
// The notebook's cell list is reported to the kernel this long after its last change, so that
// deleting a cell drops its exchange from the kernel's context (jupyter_llm/context.py).
const CELLS_DEBOUNCE_MS = 250;

namespace CommandIDs {
  export const switchModel = 'jupyter-llm:switch-model';
  export const insertPrompt = 'jupyter-llm:insert-prompt-cell';
}

/** What the kernel reports in a `{"type": "state"}` message. */
export interface ILLMState {
  target: string;
  cost: number;
  tokens: number;
  input_tokens?: number;
  output_tokens?: number;
  requests: number;
  /** "local-only" when nothing may leave the machine (`%llm offline on`, `cloud = false`). */
  mode?: string;
}

type Reply = { type: string; id?: string; [key: string]: any };

/**
 * The comm link between one notebook's session and its kernel. It follows kernel changes,
 * restarts and reconnects; `state` is null whenever the kernel has not loaded jupyter_llm.
 */
export class KernelLink {
  constructor(sessionContext: ISessionContext, cellIds?: () => string[] | null) {
    this._sessionContext = sessionContext;
    this._cellIds = cellIds ?? null;
    sessionContext.kernelChanged.connect(this._onKernelChanged, this);
    sessionContext.statusChanged.connect(this._onStatusChanged, this);
    sessionContext.connectionStatusChanged.connect(
      this._onConnectionStatusChanged,
      this
    );
    this._setKernel(sessionContext.session?.kernel ?? null);
  }

  /** The last state the kernel sent, or null when there is no live comm. */
  get state(): ILLMState | null {
    return this._state;
  }

  /** Emitted whenever `state` changes (including to and from null). */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The id of the kernel this link follows, if any. */
  get kernelId(): string | null {
    return this._kernel && !this._kernel.isDisposed ? this._kernel.id : null;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Send a request and wait for the reply carrying the same id. */
  request(
    data: { action: string; target?: string },
    timeoutMs = TARGETS_TIMEOUT_MS
  ): Promise<Reply> {
    const comm = this._comm;
    if (!comm || comm.isDisposed) {
      return Promise.reject(
        new Error('this kernel has not loaded jupyter_llm (%load_ext jupyter_llm)')
      );
    }
    const id = `r${++this._counter}`;
    return new Promise<Reply>((resolve, reject) => {
      const timer = window.setTimeout(() => {
        this._pending.delete(id);
        reject(
          new Error('the kernel did not answer: it is busy, try again when the cell has finished')
        );
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      try {
        comm.send({ ...data, id });
      } catch (err) {
        window.clearTimeout(timer);
        this._pending.delete(id);
        reject(err);
      }
    });
  }

  /**
   * Tell the kernel the notebook's cell order and which cells were deleted since the last report
   * (debounced). Deletions are found by comparing with the ids this page saw before, so a page
   * reload that gives an old (nbformat 4.4) notebook fresh cell ids deletes nothing; without a live
   * comm they are kept and sent once the kernel loads jupyter_llm.
   */
  syncCells(): void {
    if (!this._cellIds || this._isDisposed) {
      return;
    }
    window.clearTimeout(this._cellsTimer);
    this._cellsTimer = window.setTimeout(() => {
      const cells = this._cellIds ? this._cellIds() : null;
      if (!cells) {
        return;
      }
      const now = new Set(cells);
      this._known?.forEach(id => {
        if (!now.has(id)) {
          this._removed.add(id);
        }
      });
      this._known = now;
      const comm = this._comm;
      if (!comm || comm.isDisposed) {
        return;
      }
      const removed = Array.from(this._removed).filter(id => !now.has(id));
      this._removed.clear();
      try {
        comm.send({ action: 'cells', cells, removed });
      } catch (err) {
        // A closing kernel: the next attach sends the list again.
      }
    }, CELLS_DEBOUNCE_MS);
  }

  /** Remember the cells the notebook has now (when its model is ready), to tell deletions later. */
  snapshotCells(): void {
    const cells = this._cellIds ? this._cellIds() : null;
    if (cells && !this._known) {
      this._known = new Set(cells);
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    window.clearTimeout(this._cellsTimer);
    this._setKernel(null);
    Signal.clearData(this);
  }

  private _onKernelChanged(
    _: ISessionContext,
    args: { newValue: Kernel.IKernelConnection | null }
  ): void {
    this._setKernel(args.newValue);
  }

  private _onStatusChanged(_: ISessionContext, status: Kernel.Status): void {
    if (
      status === 'restarting' ||
      status === 'autorestarting' ||
      status === 'dead' ||
      status === 'terminating'
    ) {
      // The new kernel process starts without jupyter_llm; comms were cleared by services.
      this._dropComm();
      this._needProbe = true;
    } else if (status === 'idle' && this._needProbe) {
      void this._probe();
    }
  }

  private _onConnectionStatusChanged(
    _: ISessionContext,
    status: Kernel.ConnectionStatus
  ): void {
    if (status === 'connected' && !this._comm) {
      void this._probe();
    }
  }

  private _setKernel(kernel: Kernel.IKernelConnection | null): void {
    if (kernel === this._kernel) {
      return;
    }
    const old = this._kernel;
    if (old && !old.isDisposed) {
      old.removeCommTarget(COMM_TARGET, this._onCommOpen);
    }
    this._dropComm(old !== null && !old.isDisposed);
    this._kernel = kernel;
    this._needProbe = true;
    if (kernel && !kernel.isDisposed) {
      // Registered before any message of this connection is handled, so a `%load_ext` run
      // later (or the kernel's own comm_open at load) always finds the target.
      kernel.registerCommTarget(COMM_TARGET, this._onCommOpen);
      void this._probe();
    }
  }

  /** A kernel-opened comm: `%load_ext jupyter_llm` ran in the kernel. */
  private _onCommOpen = (
    comm: Kernel.IComm,
    msg: KernelMessage.ICommOpenMsg
  ): void => {
    this._attach(comm);
    this._handle(msg.content.data as Reply);
  };

  /** Ask the kernel whether jupyter_llm is loaded (a live comm exists) and adopt that comm. */
  private async _probe(): Promise<void> {
    const kernel = this._kernel;
    if (!kernel || kernel.isDisposed || !kernel.handleComms || this._comm || this._probing) {
      return;
    }
    this._probing = true;
    try {
      const reply = await kernel.requestCommInfo({ target_name: COMM_TARGET });
      this._needProbe = false;
      const content = reply.content as any;
      if (kernel !== this._kernel || this._comm || content.status !== 'ok') {
        return;
      }
      const ids = Object.keys(content.comms ?? {}).filter(
        id => content.comms[id]?.target_name === COMM_TARGET
      );
      if (ids.length === 0 || kernel.hasComm(ids[0])) {
        return;
      }
      // Adopt the kernel's comm without a new comm_open: every frontend of the kernel shares it.
      const comm = kernel.createComm(COMM_TARGET, ids[0]);
      this._attach(comm);
      comm.send({ action: 'state' });
    } catch (err) {
      // Kernel gone or restarting: the next status change probes again. Never noisy.
      this._needProbe = true;
    } finally {
      this._probing = false;
    }
  }

  private _attach(comm: Kernel.IComm): void {
    if (this._comm && this._comm !== comm && !this._comm.isDisposed) {
      this._comm.dispose();
    }
    this._comm = comm;
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => {
      if (comm === this._comm) {
        this._handle(msg.content.data as Reply);
      }
    };
    comm.onClose = () => {
      if (comm === this._comm) {
        this._comm = null;
        this._setState(null);
        this._rejectPending('jupyter_llm was unloaded from the kernel');
      }
    };
    this.syncCells();
  }

  private _handle(data: Reply | undefined): void {
    if (!data || typeof data !== 'object') {
      return;
    }
    if (data.type === 'state') {
      this._setState({
        target: String(data.target ?? ''),
        cost: Number(data.cost ?? 0),
        tokens: Number(data.tokens ?? 0),
        input_tokens: Number(data.input_tokens ?? 0),
        output_tokens: Number(data.output_tokens ?? 0),
        requests: Number(data.requests ?? 0),
        mode: String(data.mode ?? '')
      });
    }
    const id = data.id;
    if (id && this._pending.has(id)) {
      const pending = this._pending.get(id)!;
      this._pending.delete(id);
      window.clearTimeout(pending.timer);
      if (data.type === 'error') {
        pending.reject(new Error(String(data.message ?? 'error')));
      } else {
        pending.resolve(data);
      }
    }
  }

  private _dropComm(dispose = true): void {
    const comm = this._comm;
    this._comm = null;
    if (comm && dispose && !comm.isDisposed) {
      // Local only: the kernel's comm stays open for its other frontends.
      comm.dispose();
    }
    this._rejectPending('the kernel went away');
    this._setState(null);
  }

  private _rejectPending(reason: string): void {
    this._pending.forEach(p => {
      window.clearTimeout(p.timer);
      p.reject(new Error(reason));
    });
    this._pending.clear();
  }

  private _setState(state: ILLMState | null): void {
    const old = this._state;
    const same =
      old === state ||
      (old !== null &&
        state !== null &&
        old.target === state.target &&
        old.cost === state.cost &&
        old.tokens === state.tokens &&
        old.requests === state.requests &&
        old.mode === state.mode);
    this._state = state;
    if (!same && !this._isDisposed) {
      this._changed.emit();
    }
  }

  private _sessionContext: ISessionContext;
  private _kernel: Kernel.IKernelConnection | null = null;
  private _comm: Kernel.IComm | null = null;
  private _state: ILLMState | null = null;
  private _changed = new Signal<this, void>(this);
  private _pending = new Map<
    string,
    { resolve: (r: Reply) => void; reject: (e: Error) => void; timer: number }
  >();
  private _counter = 0;
  private _cellIds: (() => string[] | null) | null = null;
  private _cellsTimer = 0;
  private _removed = new Set<string>();
  private _known: Set<string> | null = null;
  private _needProbe = true;
  private _probing = false;
  private _isDisposed = false;

  /** The session this link follows (kept for debugging from the console). */
  get sessionContext(): ISessionContext {
    return this._sessionContext;
  }
}

/** Format a state for the status bar. */
export function formatState(state: ILLMState): string {
  const lock = state.mode === 'local-only' ? ' · local only' : '';
  return `LLM: ${state.target} · $${state.cost.toFixed(4)}${lock}`;
}

/** The status-bar item: text of the current notebook's link. */
class StatusItem extends Widget {
  constructor() {
    super({ node: document.createElement('div') });
    this.addClass('jp-LLMStatus');
    this.node.dataset.jupyterLlm = 'status';
    this.node.title = 'jupyter-llm: click to switch model';
  }

  update_(state: ILLMState | null): void {
    if (!state) {
      this.node.textContent = '';
      return;
    }
    this.node.textContent = formatState(state);
    this.node.dataset.mode = state.mode ?? '';
    this.node.title =
      `jupyter-llm: ${state.target}` +
      (state.mode ? ` (${state.mode})` : '') +
      '\n' +
      `${state.requests} requests, ${state.input_tokens ?? 0} in / ` +
      `${state.output_tokens ?? 0} out tokens, $${state.cost.toFixed(6)}\n` +
      'Click to switch model';
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-llm-labextension:plugin',
  description: 'Status bar item and commands for jupyter-llm kernels.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette, IConsoleTracker],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    consoles: IConsoleTracker | null
  ) => {
    // One link per notebook, and per console: a console sharing a notebook's kernel must know the
    // comm target too, or JupyterLab would answer the kernel's comm_open with a comm_close.
    const links = new Map<Widget, KernelLink>();
    const activeChanged = new Signal<object, void>(plugin);
    const item = new StatusItem();

    // Only one connection per kernel handles comms (the first one opened): when that is a console,
    // the notebook's own link stays empty and the console's link speaks for the shared kernel.
    const currentLink = (): KernelLink | null => {
      const panel = tracker.currentWidget;
      const own = panel ? links.get(panel) ?? null : null;
      if (!own || own.state) {
        return own;
      }
      const kernelId = own.kernelId;
      for (const other of links.values()) {
        if (kernelId && other.kernelId === kernelId && other.state) {
          return other;
        }
      }
      return own;
    };
    const refresh = (): void => {
      const link = currentLink();
      item.update_(link?.state ?? null);
      activeChanged.emit();
      app.commands.notifyCommandChanged(CommandIDs.switchModel);
    };
    const track = (
      panel: Widget,
      sessionContext: ISessionContext,
      notebook?: NotebookPanel
    ): void => {
      if (links.has(panel)) {
        return;
      }
      // A notebook reports its cell ids (in order) so the kernel forgets the exchanges of deleted cells.
      const cellIds = notebook
        ? (): string[] | null => {
            const model = notebook.content.model;
            if (!model) {
              return null;
            }
            const ids: string[] = [];
            for (let i = 0; i < model.cells.length; i++) {
              ids.push(model.cells.get(i).id);
            }
            return ids;
          }
        : undefined;
      const link = new KernelLink(sessionContext, cellIds);
      links.set(panel, link);
      if (notebook) {
        const follow = (): void => {
          link.snapshotCells();
          notebook.content.model?.cells.changed.connect(() => link.syncCells());
        };
        if (notebook.content.model) {
          follow();
        } else {
          notebook.context.ready.then(follow).catch(() => undefined);
        }
      }
      link.changed.connect(refresh);
      panel.disposed.connect(() => {
        links.delete(panel);
        link.dispose();
        refresh();
      });
    };
    tracker.forEach(panel => track(panel, panel.sessionContext, panel));
    tracker.widgetAdded.connect((_, panel) => track(panel, panel.sessionContext, panel));
    if (consoles) {
      consoles.forEach(panel => track(panel, panel.sessionContext));
      consoles.widgetAdded.connect((_, panel) => track(panel, panel.sessionContext));
    }
    tracker.currentChanged.connect(refresh);

    app.commands.addCommand(CommandIDs.switchModel, {
      label: 'LLM: Switch model…',
      caption: "Switch the current notebook kernel's jupyter-llm target",
      isEnabled: () => !!currentLink()?.state,
      execute: async args => {
        const link = currentLink();
        if (!link?.state) {
          return;
        }
        try {
          let target = args['target'] as string | undefined;
          if (!target) {
            const reply = await link.request({ action: 'targets' });
            const active = link.state?.target ?? String(reply.active ?? '');
            const targets: string[] = Array.from(
              new Set([active, ...((reply.targets as string[]) ?? [])].filter(Boolean))
            );
            // Editable: every known target (local servers found or served, Ollama, aliases, clouds) is
            // offered, and any other PROVIDER:MODEL can be typed.
            const result = await InputDialog.getItem({
              title: 'LLM: Switch model',
              label: `Target for this notebook\u2019s kernel (now ${active}): pick one or type PROVIDER:MODEL`,
              items: targets,
              current: '',
              editable: true,
              placeholder: active,
              okLabel: 'Switch'
            });
            if (!result.button.accept || !result.value || !result.value.trim()) {
              return;
            }
            target = result.value.trim();
          }
          await link.request({ action: 'use', target }, USE_TIMEOUT_MS);
        } catch (err) {
          await showErrorMessage('LLM: Switch model', String((err as Error).message ?? err));
        }
      }
    });

    app.commands.addCommand(CommandIDs.insertPrompt, {
      label: 'LLM: Insert prompt cell',
      caption: 'Insert a %%llm cell below the active cell',
      isEnabled: () => !!tracker.currentWidget,
      execute: () => {
        const panel = tracker.currentWidget;
        if (!panel) {
          return;
        }
        const notebook = panel.content;
        NotebookActions.insertBelow(notebook);
        const cell = notebook.activeCell;
        if (!cell) {
          return;
        }
        if (cell.model.type !== 'code') {
          NotebookActions.changeCellType(notebook, 'code');
        }
        const inserted = notebook.activeCell;
        inserted?.model.sharedModel.setSource('%%llm\n');
        // Enter edit mode after the palette has closed and handed focus back to the notebook.
        window.setTimeout(() => {
          if (notebook.isDisposed || notebook.activeCell !== inserted || !inserted) {
            return;
          }
          notebook.mode = 'edit';
          inserted.editor?.setCursorPosition({ line: 1, column: 0 });
          inserted.editor?.focus();
        }, 0);
      }
    });

    if (palette) {
      palette.addItem({ command: CommandIDs.switchModel, category: 'LLM' });
      palette.addItem({ command: CommandIDs.insertPrompt, category: 'LLM' });
    }

    if (statusBar) {
      item.node.addEventListener('click', () => {
        void app.commands.execute(CommandIDs.switchModel);
      });
      statusBar.registerStatusItem('jupyter-llm:status', {
        item,
        align: 'left',
        rank: 100,
        isActive: () => !!currentLink()?.state,
        activeStateChanged: activeChanged
      });
    }
  }
};

export default plugin;
