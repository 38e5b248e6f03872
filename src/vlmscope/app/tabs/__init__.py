"""One module per tab of the page (`app.tab.Tab`); `app.ui.TABS` lists them in page order."""
