/**
 * carta-hub's JupyterLab extension: "Open in CARTA" for images and "Open folder in CARTA" for
 * folders in the file browser (context menu and command palette).
 *
 * The server makes the link (GET <server>/carta-hub/link?path=..., carta_hub/server/links.py):
 * it alone knows how the Jupyter root maps onto CARTA's top-level folder, and it looks inside
 * folders to tell CASA and MIRIAD images from plain folders. Its message (e.g. a file outside
 * the top-level folder) is shown in a dialog.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, IFrame, MainAreaWidget, showErrorMessage } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { Contents, ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

const PLUGIN = 'carta-hub:plugin';
const OPEN = 'carta-hub:open';
const OPEN_FOLDER = 'carta-hub:open-folder';
const CATEGORY = 'CARTA';
/** Image files CARTA reads (FITS, also gzipped, and HDF5); image folders the server tells. */
const IMAGE_FILE = /\.(fits?|fts)(\.gz)?$|\.(hdf5|h5)$/i;

/** The server's answer for a path. */
interface ILink {
  url: string;
  kind: 'image' | 'folder';
}

class LinkError extends Error {}

/** Ask the server for the CARTA link of `path` (relative to the Jupyter root). */
async function requestLink(path: string): Promise<ILink> {
  const settings = ServerConnection.makeSettings();
  const url =
    URLExt.join(settings.baseUrl, 'carta-hub', 'link') +
    URLExt.objectToQueryString({ path });
  const response = await ServerConnection.makeRequest(url, {}, settings);
  let body: any = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: an error page; its status says enough
  }
  if (!response.ok) {
    throw new LinkError(
      body.message || `The server answered ${response.status} ${response.statusText}.`
    );
  }
  return body as ILink;
}

/** The server's kind of each folder asked about so far (undefined: not answered yet). */
const folderKinds = new Map<string, ILink['kind']>();

function isImage(item: Contents.IModel): boolean {
  return item.type === 'directory'
    ? folderKinds.get(item.path) === 'image'
    : IMAGE_FILE.test(item.name);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN,
  description: 'Open images and folders of the file browser in CARTA',
  autoStart: true,
  requires: [IDefaultFileBrowser, ISettingRegistry],
  optional: [ICommandPalette],
  activate: async (
    app: JupyterFrontEnd,
    browser: IDefaultFileBrowser,
    registry: ISettingRegistry,
    palette: ICommandPalette | null
  ) => {
    const settings = await registry.load(PLUGIN);
    const selected = (): Contents.IModel | undefined => browser.selectedItems().next().value;

    /** Learn the kind of the selected folders when the context menu opens (this listener
     * runs before the application's, which opens the menu); when the answer comes, the open
     * menu renders its items again and "Open in CARTA" shows for an image folder. */
    browser.node.addEventListener(
      'contextmenu',
      () => {
        for (const item of browser.selectedItems()) {
          if (item.type === 'directory' && !folderKinds.has(item.path)) {
            requestLink(item.path)
              .then(link => folderKinds.set(item.path, link.kind))
              .catch(() => folderKinds.set(item.path, 'folder'))
              .then(() => {
                app.commands.notifyCommandChanged(OPEN);
                app.commands.notifyCommandChanged(OPEN_FOLDER);
                app.contextMenu.menu.update();
              });
          }
        }
      },
      true
    );

    function openInLab(url: string, title: string): void {
      const frame = new IFrame({
        sandbox: [
          'allow-scripts',
          'allow-same-origin',
          'allow-downloads',
          'allow-forms',
          'allow-modals',
          'allow-popups'
        ]
      });
      frame.url = url;
      const widget = new MainAreaWidget({ content: frame });
      widget.id = `carta-hub-${Date.now()}`;
      widget.title.label = `CARTA: ${title}`;
      widget.title.closable = true;
      app.shell.add(widget, 'main');
      app.shell.activateById(widget.id);
    }

    /** Open CARTA on `path`. A browser tab is opened at once, inside the click (a tab opened
     * after waiting for the server would be stopped as a pop-up), and pointed at CARTA when
     * the link comes. */
    async function open(path: string, title: string): Promise<void> {
      const inLab = settings.get('openIn').composite === 'lab-tab';
      const tab = inLab ? null : window.open('', '_blank');
      try {
        const link = await requestLink(path);
        if (tab) {
          tab.location.href = link.url;
        } else {
          openInLab(link.url, title);
        }
      } catch (error) {
        tab?.close();
        const message = error instanceof LinkError ? error.message : String(error);
        await showErrorMessage('Cannot open in CARTA', message);
      }
    }

    app.commands.addCommand(OPEN, {
      label: 'Open in CARTA',
      caption: 'Open this image in CARTA',
      isVisible: () => {
        const item = selected();
        return item !== undefined && isImage(item);
      },
      execute: () => {
        const item = selected();
        return item ? open(item.path, item.name) : undefined;
      }
    });

    // In the context menu (args.menu) for plain folders; in the palette always: the selected
    // folder, else the file browser's current one.
    app.commands.addCommand(OPEN_FOLDER, {
      label: 'Open folder in CARTA',
      caption: "CARTA's File Browser in this folder",
      isVisible: args => {
        const item = selected();
        return !args.menu || (item?.type === 'directory' && !isImage(item));
      },
      execute: () => {
        const item = selected();
        const path = item?.type === 'directory' ? item.path : browser.model.path;
        return open(path, path.split('/').pop() || 'home');
      }
    });

    const items = '.jp-DirListing-item[data-isdir]';
    app.contextMenu.addItem({ command: OPEN, selector: items, rank: 1.5 });
    app.contextMenu.addItem({
      command: OPEN_FOLDER,
      selector: items,
      rank: 1.6,
      args: { menu: true }
    });
    palette?.addItem({ command: OPEN, category: CATEGORY });
    palette?.addItem({ command: OPEN_FOLDER, category: CATEGORY });
  }
};

export default plugin;
