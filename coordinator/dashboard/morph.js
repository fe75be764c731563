/* Re-rendering in place: the new tree is built, then the page's tree is made to look like it. */

/** Make `from` look like `to` in place: the elements that stay keep their identity, so a click,
 * a hover tooltip or a text selection survives the refresh. Listeners are not copied: content
 * that is re-rendered uses delegated listeners (see main.js). */
export function morph(from, to) {
  if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName || from.nodeType !== Node.ELEMENT_NODE) {
    if (from.nodeType === Node.TEXT_NODE && to.nodeType === Node.TEXT_NODE) {
      if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
    } else {
      from.replaceWith(to);
    }
    return;
  }
  for (const { name } of [...from.attributes]) {
    if (name !== 'style' && !to.hasAttribute(name)) from.removeAttribute(name);
  }
  for (const { name, value } of [...to.attributes]) {
    if (name !== 'style' && from.getAttribute(name) !== value) from.setAttribute(name, value);
  }
  if (from.style && from.style.cssText !== to.style.cssText) from.style.cssText = to.style.cssText;  // CSSOM: CSP allows it
  morphKids(from, [...to.childNodes]);
}

function morphKids(parent, kids) {
  kids.forEach((kid, i) => {
    const cur = parent.childNodes[i];
    if (cur) morph(cur, kid); else parent.append(kid);
  });
  while (parent.childNodes.length > kids.length) parent.lastChild.remove();
}

/** Like el.replaceChildren(...kids), but morphing what is there. */
export function setKids(el, ...kids) {
  morphKids(el, kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false)
    .map((k) => (k instanceof Node ? k : document.createTextNode(String(k)))));
}
