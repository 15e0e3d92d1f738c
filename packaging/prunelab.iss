; Inno Setup script for Windows: wraps dist\PruneLab (built on Windows by `pyinstaller packaging\prunelab.spec
; --distpath dist`) into PruneLab-setup-VERSION.exe.
; UNTESTED: written without a Windows machine; check it there before handing it to anyone.
;     iscc /DVersion=0.1.0 packaging\prunelab.iss
#ifndef Version
  #define Version "0.1.0"
#endif

[Setup]
AppId={{6C1B7F4E-2D4A-4B8E-9E55-7C1D3A0F5B21}
AppName=PruneLab
AppVersion={#Version}
AppPublisher=PruneLab
DefaultDirName={autopf}\PruneLab
DefaultGroupName=PruneLab
DisableProgramGroupPage=yes
OutputDir=..\dist
OutputBaseFilename=PruneLab-setup-{#Version}
SetupIconFile=..\resources\icons\prunelab.ico
UninstallDisplayIcon={app}\PruneLab.exe
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
Compression=lzma2/fast
SolidCompression=no
; the bundle holds PyTorch and CUDA: several GB
DiskSpanning=no

[Files]
Source: "..\dist\PruneLab\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\PruneLab"; Filename: "{app}\PruneLab.exe"
Name: "{group}\PruneLab self-test"; Filename: "{cmd}"; Parameters: "/k ""{app}\PruneLab.exe"" --self-test --gui"

[Run]
Filename: "{app}\PruneLab.exe"; Description: "Start PruneLab"; Flags: nowait postinstall skipifsilent
